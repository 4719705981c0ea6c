"""The monitoring hub end to end (issue 11, SPEC 5), every part a real process: one
`corral hub` served over TLS on loopback with a certificate from a CA this test makes;
real corral daemons started through the real CLI, each running an app and linked with
`corral link ... --hub wss://localhost:PORT --ca-file <ca>` to a bucket made with
`corral hub create-bucket`; the hub's JSON API used over HTTPS as each bucket's owner
(session cookie, CSRF token, Origin).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.paths import Home

from ..conftest import Corral, wait_for
from ..support.hub import HubClient, HubProcess, MadeBucket, running_hub
from ..support.tls import Pki, make_pki

pytestmark = pytest.mark.slow

APP = """\
import time
from corral import client
n = 0
while True:
    n += 1
    client.metric("requests", n, "counter")
    time.sleep(0.5)
"""
AGENT_PASSWORD = "agent pass phrase for e2e 7c1d"
WAIT = 60.0

NewDaemon = Callable[..., Corral]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def hub(tmp_path: Path, pki: Pki) -> Iterator[HubProcess]:
    with running_hub(tmp_path / "hub", pki) as process:
        yield process


@pytest.fixture
def clients() -> Iterator[list[HubClient]]:
    made: list[HubClient] = []
    try:
        yield made
    finally:
        for client in made:
            client.close()


@pytest.fixture
def new_daemon() -> Iterator[NewDaemon]:
    """Corral homes whose daemons are started by the real CLI (`corral ping` starts one);
    every daemon and its apps are stopped even on failure."""
    made: list[tuple[Corral, Path]] = []

    def start(app: str, **extra_env: str) -> Corral:
        base = Path(tempfile.mkdtemp(prefix="crh-"))  # short: unix socket paths
        home = Home(base / "home")
        workdir = base / "work"
        workdir.mkdir()
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "CORRAL_HOME": str(home.root),
            "HOME": str(base),
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra_env,
        }
        corral = Corral(home=home, env=env, workdir=workdir)
        made.append((corral, base))
        corral.ok("ping")
        assert corral.daemon_pid() is not None
        corral.ok("set", "agent.interval", "1")
        script = corral.write(f"{app}.py", APP)
        corral.ok("start", str(script), "--name", app, "--interpreter", sys.executable)
        wait_for(lambda: corral.proc(app)["status"] == "online")
        return corral

    try:
        yield start
    finally:
        for corral, base in made:
            corral.shutdown()
            shutil.rmtree(base, ignore_errors=True)


def link(corral: Corral, bucket: MadeBucket, hub: HubProcess) -> str:
    """`corral link` over wss with the test's CA; the daemon's server id."""
    result = corral.ok(
        "link", bucket.public_id, bucket.secret, "--hub", hub.agent_url,
        "--ca-file", str(hub.pki.ca_cert),
    )  # fmt: skip
    assert "connected" in result.out and "not connected" not in result.out, result
    info = json.loads(corral.ok("link", "--info", "--json").out)
    assert info["connected"] is True and info["public_id"] == bucket.public_id
    return str(info["server_id"])


def set_password(corral: Corral) -> None:
    corral.ok("set", "agent.password", input=AGENT_PASSWORD + "\n")


def server_view(
    client: HubClient, bucket: MadeBucket, server_id: str, check: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """The bucket API's entry for this server, once `check` holds for it."""

    def found() -> dict[str, Any] | None:
        for server in client.get_json(f"/api/b/{bucket.public_id}")["servers"]:
            if server["server_id"] == server_id and check(server):
                return dict(server)
        return None

    return dict(wait_for(found, timeout=WAIT, interval=0.3))


def app_in(server: dict[str, Any], name: str) -> dict[str, Any] | None:
    for app in server["apps"]:
        if app["name"] == name:
            return dict(app)
    return None


def act(
    client: HubClient,
    bucket: MadeBucket,
    server_pk: int,
    verb: str,
    target: str,
    password: str | None = None,
) -> dict[str, Any]:
    """Ask for an action through the API; its row in the actions log once answered."""
    body = {"verb": verb, "target": target}
    if password is not None:
        body["password"] = password
    sent = client.post(f"/api/b/{bucket.public_id}/servers/{server_pk}/actions", body)
    assert sent.status_code == 200, (verb, sent.status_code, sent.text)
    action_id = sent.json()["id"]

    def answered() -> dict[str, Any] | None:
        for row in client.get_json(f"/api/b/{bucket.public_id}/actions")["actions"]:
            if row["id"] == action_id and row["state"] != "sent":
                return dict(row)
        return None

    return dict(wait_for(answered, timeout=WAIT, interval=0.2))


def refused_by_hub(
    client: HubClient, bucket: MadeBucket, server_pk: int, body: dict[str, str]
) -> str:
    answer = client.post(f"/api/b/{bucket.public_id}/servers/{server_pk}/actions", body)
    assert answer.status_code == 422, (body, answer.status_code, answer.text)
    return str(answer.json().get("error") or answer.text)


def test_two_daemons_two_buckets_metrics_actions_and_isolation(
    hub: HubProcess, new_daemon: NewDaemon, clients: list[HubClient]
) -> None:
    hub.create_user("alice")
    hub.create_user("bob")
    bucket_a = hub.create_bucket("alpha", owner="alice")
    bucket_b = hub.create_bucket("bravo", owner="bob")
    daemon_a = new_daemon("web")
    daemon_b = new_daemon("worker")
    server_a = link(daemon_a, bucket_a, hub)
    server_b = link(daemon_b, bucket_b, hub)
    alice = hub.login("alice")
    clients.append(alice)
    bob = hub.login("bob")
    clients.append(bob)

    # Each owner lists their own bucket only.
    assert [b["public_id"] for b in alice.get_json("/api/buckets")["buckets"]] == [
        bucket_a.public_id
    ]
    assert [b["public_id"] for b in bob.get_json("/api/buckets")["buckets"]] == [bucket_b.public_id]

    # Metrics arrive: the server and its app, live values, then a chart series.
    def has_app(name: str) -> Callable[[dict[str, Any]], Any]:
        def check(server: dict[str, Any]) -> Any:
            app = app_in(server, name)
            return server["connected"] and app and app["memory"] and app["status"] == "online"

        return check

    seen_a = server_view(alice, bucket_a, server_a, has_app("web"))
    seen_b = server_view(bob, bucket_b, server_b, has_app("worker"))
    for seen in (seen_a, seen_b):
        assert seen["hostname"] and len(seen["load"]) == 3
        assert seen["memory_total"] > 0 and seen["remote_actions"] is True
    assert app_in(seen_a, "worker") is None and app_in(seen_b, "web") is None
    web = app_in(seen_a, "web")
    assert web is not None and "requests" in web["custom"]
    pk_a, pk_b = int(seen_a["id"]), int(seen_b["id"])

    def charted() -> Any:
        detail = alice.get_json(f"/api/b/{bucket_a.public_id}/servers/{pk_a}")
        return len(detail["series"]["cpu_percent"]) >= 2 and detail["series"]["apps"]

    assert "web#0" in wait_for(charted, timeout=WAIT, interval=0.3)

    # A restart from the hub runs on the daemon: the app's pid changes.
    first_pid = daemon_a.proc("web")["pid"]
    done = act(alice, bucket_a, pk_a, "restart", "web")
    assert (done["state"], done["requested_by"], done["code"]) == ("ok", "alice", None), done
    wait_for(lambda: daemon_a.proc("web")["pid"] not in (None, first_pid), timeout=WAIT)
    wait_for(lambda: daemon_a.proc("web")["status"] == "online", timeout=WAIT)

    # Stop: refused while the daemon has no agent password...
    message = refused_by_hub(
        alice, bucket_a, pk_a, {"verb": "stop", "target": "web", "password": AGENT_PASSWORD}
    )
    assert "no agent password set" in message
    # ...then set on that daemon; the agent's new hello tells the hub.
    set_password(daemon_a)
    server_view(alice, bucket_a, server_a, lambda s: s["connected"] and s["agent_password"])
    message = refused_by_hub(alice, bucket_a, pk_a, {"verb": "stop", "target": "web"})
    assert "needs the agent password" in message
    wrong = act(alice, bucket_a, pk_a, "stop", "web", password="not the agent password")
    assert (wrong["state"], wrong["code"]) == ("refused", "bad_proof"), wrong
    assert daemon_a.proc("web")["status"] == "online"
    stopped = act(alice, bucket_a, pk_a, "stop", "web", password=AGENT_PASSWORD)
    assert (stopped["state"], stopped["with_proof"]) == ("ok", True), stopped
    wait_for(lambda: daemon_a.proc("web")["status"] == "stopped", timeout=WAIT)
    assert daemon_b.proc("worker")["status"] == "online"  # the other bucket's app: untouched

    # Bucket B's owner sees nothing of bucket A: 404 everywhere, as for no such bucket.
    a = bucket_a.public_id
    actions_before = len(alice.get_json(f"/api/b/{a}/actions")["actions"])
    worker_pid = daemon_b.proc("worker")["pid"]
    for path in (
        f"/api/b/{a}",
        f"/api/b/{a}/servers/{pk_a}",
        f"/api/b/{a}/actions",
        f"/api/b/{a}/alerts",
        f"/api/b/{a}/members",
        f"/b/{a}",
        f"/b/{a}/servers/{pk_a}",
        f"/b/{a}/actions",
    ):
        answer = bob.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "alpha" not in answer.text and "web" not in answer.text, path
    # Nor can B's owner reach A's server through B's bucket, nor act on it.
    assert bob.get(f"/api/b/{bucket_b.public_id}/servers/{pk_a}").status_code == 404
    b = bucket_b.public_id
    for path in (f"/api/b/{a}/servers/{pk_a}/actions", f"/api/b/{b}/servers/{pk_a}/actions"):
        answer = bob.post(path, {"verb": "restart", "target": "web"})
        assert answer.status_code == 404, (path, answer.status_code)
    assert alice.get(f"/api/b/{bucket_b.public_id}").status_code == 404
    assert alice.get(f"/api/b/{a}/servers/{pk_b}").status_code == 404
    assert len(alice.get_json(f"/api/b/{a}/actions")["actions"]) == actions_before
    assert daemon_b.proc("worker")["pid"] == worker_pid

    # The bucket secrets and the agent password are in no hub table and no hub file.
    assert_nowhere_in_hub(
        hub,
        [bucket_a.secret, bucket_b.secret, AGENT_PASSWORD],
        stored=[bucket_a.public_id, bucket_b.public_id, server_a, server_b],
    )


def assert_nowhere_in_hub(hub: HubProcess, values: list[str], stored: list[str]) -> None:
    """None of `values` in any file of the hub's home, its log or a table row; `stored`
    (values the hub does keep) found the same way, so the scan is known to see data."""
    import sqlite3

    files = [p for p in hub.home.rglob("*") if p.is_file()] + [hub.log]
    assert hub.database in files
    everything = b"".join(path.read_bytes() for path in files)
    for value in stored:
        assert value.encode() in everything, value
    for path in files:
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, f"a secret is in {path}"
    with sqlite3.connect(f"file:{hub.database}?mode=ro", uri=True) as db:
        dump = "\n".join(db.iterdump())
    assert "CREATE TABLE" in dump and "INSERT INTO" in dump
    for value in values:
        assert value not in dump
    for value in stored:
        assert value in dump, value


def test_remote_actions_off_refuses_everything(
    hub: HubProcess, new_daemon: NewDaemon, clients: list[HubClient]
) -> None:
    hub.create_user("carol")
    bucket = hub.create_bucket("charlie", owner="carol")
    by_setting = new_daemon("web")
    by_env = new_daemon("web", CORRAL_REMOTE_ACTIONS="off")
    for corral in (by_setting, by_env):
        set_password(corral)
    server_setting = link(by_setting, bucket, hub)
    server_env = link(by_env, bucket, hub)
    carol = hub.login("carol")
    clients.append(carol)

    def ready(server: dict[str, Any]) -> Any:
        return server["connected"] and server["agent_password"] and app_in(server, "web")

    before = server_view(carol, bucket, server_setting, ready)
    assert before["remote_actions"] is True
    # The switch turned off on a linked daemon: its agent says so to the hub.
    by_setting.ok("set", "agent.remote_actions", "off")
    seen_setting = server_view(carol, bucket, server_setting, lambda s: not s["remote_actions"])
    seen_env = server_view(carol, bucket, server_env, ready)
    assert seen_env["remote_actions"] is False
    info = json.loads(by_env.ok("link", "--info", "--json").out)
    assert info["remote_actions_env"] is False and info["remote_actions"] is False

    for corral, seen in ((by_setting, seen_setting), (by_env, seen_env)):
        pid = corral.proc("web")["pid"]
        for verb, password in (
            ("restart", None),
            ("reload", None),
            ("reset", None),
            ("stop", AGENT_PASSWORD),
            ("delete", AGENT_PASSWORD),
        ):
            row = act(carol, bucket, int(seen["id"]), verb, "web", password=password)
            assert (row["state"], row["code"]) == ("refused", "remote_actions_off"), row
        assert corral.proc("web")["pid"] == pid
        assert corral.proc("web")["status"] == "online"
        assert corral.proc("web")["restarts"] == 0
    assert_nowhere_in_hub(hub, [bucket.secret, AGENT_PASSWORD], stored=[server_env])
