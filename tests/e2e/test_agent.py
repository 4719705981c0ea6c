"""The agent end to end (SPEC 5): the real `corral` CLI and daemon, linked to a test hub
built from the protocol's `HubHandshake` on a real websockets server on loopback (wss
with a CA this test makes; the agent trusts it through --ca-file).
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.hub import BucketKeys, derive_bucket_keys, new_public_id, new_secret

from ..agent.testhub import TestHub, running_hub
from ..conftest import Corral, read_text, wait_for
from ..support.tls import Pki, make_pki

pytestmark = pytest.mark.slow

APP = """\
import time
from corral import client
n = 0
while True:
    n += 1
    client.metric("requests", n, "counter")
    client.metric("queue_depth", 7)
    time.sleep(0.5)
"""
PASSWORD = "correct horse battery staple"


class Bucket:
    def __init__(self, secret: str | None = None) -> None:
        self.public_id = new_public_id()
        self.secret = secret or new_secret()
        self.keys: BucketKeys = derive_bucket_keys(self.public_id, self.secret)


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def hub(bucket: Bucket, pki: Pki) -> Iterator[TestHub]:
    with running_hub([bucket.keys], pki) as test_hub:
        yield test_hub


def link(corral: Corral, bucket: Bucket, hub: TestHub, pki: Pki | None) -> None:
    args = ["link", bucket.public_id, bucket.secret, "--hub", hub.url]
    if pki is not None:
        args += ["--ca-file", str(pki.ca_cert)]
    result = corral.ok(*args)
    assert "connected" in result.out and "not connected" not in result.out


def info(corral: Corral) -> dict[str, Any]:
    return dict(json.loads(corral.ok("link", "--info", "--json").out))


def set_password(corral: Corral, password: str) -> None:
    corral.ok("set", "agent.password", input=password + "\n")


def test_link_over_tls_pushes_metrics_that_decrypt(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.ok("set", "agent.interval", "1")
    daemon.start_app("web", APP)
    link(daemon, bucket, hub, pki)

    conn = hub.wait_connected()
    state = json.loads((daemon.home.root / "agent.json").read_text())
    assert conn.hello is not None
    assert conn.hello["server_id"] == state["server_id"]
    assert conn.hello["remote_actions"] is True and conn.hello["password"] is None

    def pushed_app() -> dict[str, Any] | None:
        for _, body in hub.metrics:
            for app in body["apps"]:
                if app["name"] == "web" and app["memory"] and "requests" in app["custom"]:
                    return dict(app)
        return None

    app = wait_for(pushed_app, timeout=60)
    assert app["status"] == "online"
    assert app["exec_mode"] == "fork"
    assert app["git_revision"] is None
    assert app["restarts"] == 0 and app["unstable_restarts"] == 0
    assert app["custom"]["queue_depth"] == {"kind": "gauge", "value": 7}
    server = hub.metrics[-1][1]["server"]
    assert server["hostname"] and len(server["load"]) == 3
    assert server["memory"]["total"] > 0 and server["cpu"]["count"] >= 1

    shown = info(daemon)
    assert shown["connected"] is True and shown["public_id"] == bucket.public_id
    assert shown["hub"] == hub.url + "/agent/v1"
    assert shown["last_push"] is not None
    text = daemon.ok("link", "--info").out
    assert "connected       yes" in text and bucket.public_id in text

    # The secret is stored nowhere and sent nowhere.
    agent_json = daemon.home.root / "agent.json"
    assert stat.S_IMODE(agent_json.stat().st_mode) == 0o600
    assert bucket.secret not in agent_json.read_text()
    assert BucketKeys.from_json(state["keys"]) == bucket.keys
    assert not any(bucket.secret in text for text in hub.texts)
    assert bucket.secret not in read_text(daemon.home.daemon_log)


def test_tls_refused_without_the_ca(daemon: Corral, bucket: Bucket, hub: TestHub) -> None:
    result = daemon.cli("link", bucket.public_id, bucket.secret, "--hub", hub.url)
    assert result.code == 1
    assert "not connected yet" in result.out
    assert "certificate is not trusted" in result.err and "--ca-file" in result.err
    assert hub.hellos == []
    assert "certificate is not trusted" in str(info(daemon)["last_error"])


def test_ssl_cert_file_names_the_ca_too(daemon: Corral, hub: TestHub, pki: Pki) -> None:
    bucket = Bucket("-h" + new_secret())  # URL-safe base64 may start with a dash
    hub.keys[bucket.public_id] = bucket.keys
    env = {**daemon.env, "SSL_CERT_FILE": str(pki.ca_cert)}
    result = daemon.ok("link", bucket.public_id, bucket.secret, "--hub", hub.url, env=env)
    assert "connected" in result.out and "not connected" not in result.out
    assert info(daemon)["ca_file"] == str(pki.ca_cert)


def test_replayed_or_altered_action_frames_drop_the_connection(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.start_app("web", APP)
    link(daemon, bucket, hub, pki)
    assert hub.action("restart", "web")["ok"] is True
    wait_for(lambda: daemon.proc("web")["restarts"] == 1)
    hub.send_raw(hub.sent[-1])  # the same frame again: replayed
    wait_for(lambda: 1008 in hub.close_codes)
    conn = hub.wait_connected(after=1)  # the agent comes back with a new session
    assert daemon.proc("web")["restarts"] == 1  # the replay ran nothing
    assert hub.action("restart", "web")["ok"] is True
    frame = json.loads(hub.sent[-1])
    frame["seq"] += 1
    frame["ct"] = frame["ct"][:-4] + ("AAAA" if frame["ct"][-4:] != "AAAA" else "BBBB")
    hub.send_raw(json.dumps(frame, separators=(",", ":")))  # tampered
    wait_for(lambda: hub.close_codes.count(1008) == 2)
    assert conn is not hub.wait_connected(after=2)
    # The daemon's log is written in batches by its own thread: wait for both lines.
    wait_for(lambda: all(w in read_text(daemon.home.daemon_log) for w in ("replayed", "tampered")))


def test_wrong_secret_is_denied_and_said(daemon: Corral, hub: TestHub, pki: Pki) -> None:
    other = Bucket()
    hub.keys[other.public_id] = derive_bucket_keys(other.public_id, new_secret())
    result = daemon.cli(
        "link", other.public_id, other.secret, "--hub", hub.url, "--ca-file", str(pki.ca_cert)
    )
    assert result.code == 1
    assert "wrong secret or unknown public id" in result.err
    assert hub.hellos == [] and hub.denied >= 1


def test_bad_link_requests_refused(daemon: Corral, bucket: Bucket) -> None:
    hub_url = "wss://hub.example.org"
    cases = [
        (["--hub", "ws://hub.example.org"], "loopback"),
        (["--hub", "wss://hub.example.org", "--ca-file", "/nonexistent.pem"], "does not exist"),
        ([], "usage"),
    ]
    for extra, message in cases:
        result = daemon.cli("link", bucket.public_id, bucket.secret, *extra)
        assert result.code == 2, result
        assert message in result.err
        assert bucket.secret not in result.err
    with daemon.client() as client:
        from corral.protocol.wire import ProtocolError

        with pytest.raises(ProtocolError, match="loopback"):
            client.call("link", hub="ws://hub.example.org", keys=bucket.keys.to_json())
        with pytest.raises(ProtocolError, match="CA file"):
            client.call("link", hub=hub_url, keys=bucket.keys.to_json(), ca_file="/etc/passwd")
        with pytest.raises(ProtocolError, match="bucket keys"):
            client.call("link", hub=hub_url, keys={"v": 1, "public_id": bucket.public_id})
    result = daemon.cli("link", bucket.public_id, "short", "--hub", "wss://h.example.org")
    assert result.code == 2 and "32 to 512" in result.err and "short" not in result.err
    assert not (daemon.home.root / "agent.json").exists()


def test_hub_away_queue_bounded_oldest_dropped_then_flushed(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.ok("set", "agent.interval", "1")
    daemon.ok("set", "agent.queue", "3")
    link(daemon, bucket, hub, pki)
    hub.wait_metrics(1)
    hub.stop()
    gone = time.time()
    wait_for(lambda: info(daemon)["connected"] is False, timeout=30)
    shown = wait_for(lambda: (i := info(daemon))["dropped"] >= 2 and i, timeout=60)
    assert shown["queue"] == 3 and shown["queue_limit"] == 3
    before = len(hub.metrics)
    hub.start()  # the same port: the agent comes back on its own
    hub.wait_connected(after=1, timeout=90)
    wait_for(lambda: len(hub.metrics) >= before + 3, timeout=30)
    flushed = [body for _, body in hub.metrics[before : before + 3]]
    stamps = [body["sampled_at"] for body in flushed]
    assert stamps == sorted(stamps)
    # Queued while the hub was away, and the newest three (the oldest were dropped).
    assert all(stamp > gone for stamp in stamps)
    assert stamps[0] - gone > 1.5
    after = info(daemon)
    assert after["connected"] is True and after["queue"] <= 1
    assert after["dropped"] >= shown["dropped"]


def test_actions_restart_and_stop_with_the_agent_password(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.start_app("web", APP)
    link(daemon, bucket, hub, pki)
    hub.wait_connected()
    first_pid = daemon.proc("web")["pid"]

    result = hub.action("restart", "web")
    assert result["ok"] is True and result["code"] is None, result
    wait_for(lambda: daemon.proc("web")["pid"] not in (None, first_pid))
    assert daemon.proc("web")["status"] == "online"

    refused = hub.action("stop", "web")
    assert refused["ok"] is False and refused["code"] == "no_password_set"
    refused = hub.action("restart", "nope")
    assert refused["code"] == "unknown_target"

    hellos = len(hub.hellos)
    set_password(daemon, PASSWORD)
    conn = hub.wait_connected(after=hellos)  # the new hello announces the password
    assert conn.hello is not None and conn.hello["password"] is not None
    assert "public_key" not in conn.hello["password"]

    assert hub.action("stop", "web")["code"] == "password_required"
    assert hub.action("stop", "web", password="wrong password")["code"] == "bad_proof"
    assert daemon.proc("web")["status"] == "online"
    done = hub.action("stop", "web", password=PASSWORD)
    assert done["ok"] is True, done
    assert daemon.proc("web")["status"] == "stopped"

    # Logged with who asked, the verb, the target and the result.
    done_line = "stop web requested by alice@example.org: ok: stopped web"
    log = wait_for(
        lambda: (text := read_text(daemon.home.daemon_log)) and done_line in text and text
    )
    assert "restart web requested by alice@example.org: ok: restarted web" in log
    assert "stop web requested by alice@example.org: refused (bad_proof)" in log
    # The password is nowhere: not in a frame, the settings, the log or the state.
    for text in [*hub.texts, log, (daemon.home.root / "settings.json").read_text()]:
        assert PASSWORD not in text
    assert daemon.ok("get", "agent.password").out.strip() == "agent.password = (set)"


def test_scale_and_env_need_the_password(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.start_app("web", APP)
    set_password(daemon, PASSWORD)
    link(daemon, bucket, hub, pki)
    hub.wait_connected()
    assert hub.action("scale", "web", {"count": "2"})["code"] == "password_required"
    assert hub.action("scale", "web", {"count": "2"}, password=PASSWORD)["ok"] is True
    assert len([r for r in daemon.jlist() if r["name"] == "web"]) == 2
    args = {"set": {"GREETING": "value-7f3a9c"}, "unset": []}
    assert hub.action("env", "web", args, password=PASSWORD)["ok"] is True
    envs = daemon.call("env", target="web")
    assert [entry["env"]["GREETING"] for entry in envs] == ["value-7f3a9c"] * 2
    no_git = hub.action("deploy", "web", {"ref": None}, password=PASSWORD)
    assert no_git["code"] == "invalid" and "git" in no_git["message"]
    assert hub.action("reset", "web")["ok"] is True
    assert hub.action("reload", "web")["ok"] is True
    assert hub.action("delete", "web")["code"] == "password_required"
    assert hub.action("delete", "web", password=PASSWORD)["ok"] is True
    assert daemon.jlist() == []
    line = "delete web requested by alice@example.org: ok: deleted web"
    log = wait_for(lambda: (text := read_text(daemon.home.daemon_log)) and line in text and text)
    assert "value-7f3a9c" not in log  # env values are never logged


def test_remote_actions_off_by_setting_refuses_everything(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    daemon.start_app("web", APP)
    set_password(daemon, PASSWORD)
    daemon.ok("set", "agent.remote_actions", "off")
    link(daemon, bucket, hub, pki)
    conn = hub.wait_connected()
    assert conn.hello is not None and conn.hello["remote_actions"] is False
    pid = daemon.proc("web")["pid"]
    for verb in ("restart", "reset", "stop"):
        result = hub.action(verb, "web", password=PASSWORD)
        assert result["code"] == "remote_actions_off", result
    assert daemon.proc("web")["pid"] == pid and daemon.proc("web")["status"] == "online"
    assert "remote actions  off (agent.remote_actions off)" in daemon.ok("link", "--info").out


def test_remote_actions_off_by_environment_refuses_everything(
    corral: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    corral.env["CORRAL_REMOTE_ACTIONS"] = "off"
    corral.start_daemon()
    corral.start_app("web", APP)
    set_password(corral, PASSWORD)
    assert corral.ok("get", "agent.remote_actions").out.strip() == "agent.remote_actions = true"
    link(corral, bucket, hub, pki)
    conn = hub.wait_connected()
    assert conn.hello is not None and conn.hello["remote_actions"] is False
    pid = corral.proc("web")["pid"]
    for verb in ("restart", "stop"):
        assert hub.action(verb, "web", password=PASSWORD)["code"] == "remote_actions_off"
    assert corral.proc("web")["pid"] == pid
    assert info(corral)["remote_actions_env"] is False


def test_unlink_closes_and_forgets_and_link_survives_restarts(
    daemon: Corral, bucket: Bucket, hub: TestHub, pki: Pki
) -> None:
    link(daemon, bucket, hub, pki)
    server_id = hub.wait_connected().hello["server_id"]  # type: ignore[index]
    # A daemon restart links again, as the same server.
    daemon.ok("kill")
    daemon.start_daemon()
    conn = hub.wait_connected(after=1)
    assert conn.hello is not None and conn.hello["server_id"] == server_id
    # Linking again (new hub URL or keys) keeps the server's id.
    link(daemon, bucket, hub, pki)
    assert hub.wait_connected(after=2).hello["server_id"] == server_id  # type: ignore[index]

    other = daemon.cli("unlink", "0123456789abcdef")
    assert other.code == 1 and "nothing changed" in other.err
    result = daemon.ok("unlink", bucket.public_id)
    assert "unlinked from" in result.out
    assert not (daemon.home.root / "agent.json").exists()
    wait_for(lambda: hub.conn is None)
    assert info(daemon)["linked"] is False
    assert "not linked" in daemon.ok("unlink").out
    assert "not linked to a hub" in daemon.ok("link", "--info").out


def test_agent_password_never_from_argv(daemon: Corral) -> None:
    result = daemon.cli("set", "agent.password", "hunter2")
    assert result.code == 2 and "never taken from the command line" in result.err
    assert "hunter2" not in result.err + result.out
    verifier_like = daemon.cli("set", "agent.password", '{"v":1}')
    assert verifier_like.code == 2 and "never taken" in verifier_like.err
    # A client that sends a password as the value is refused without echo.
    with daemon.client() as client:
        from corral.protocol.wire import ProtocolError

        with pytest.raises(ProtocolError) as caught:
            client.call("set", key="agent.password", value="hunter2")
    assert "hunter2" not in caught.value.message
    set_password(daemon, PASSWORD)
    assert daemon.ok("get", "agent.password").out.strip() == "agent.password = (set)"
    assert daemon.ok("set", "agent.password", "").code == 0
    assert daemon.ok("get", "agent.password").out.strip() == "agent.password = None"
