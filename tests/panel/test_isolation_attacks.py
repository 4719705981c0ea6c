"""Attacks on tenant isolation through the panel (issue 9), as root only.

One module-wide world: a real `corral helper`, the panel in isolated mode run by a
temporary panel user, two tenants A and B made through the admin API (real system users
made by the helper), `alice` with every right on A only, `bob` with every right on B
only, apps created through the panel in each. B's app logs a marker line; B's home holds
`secret.txt` (0640) with another marker. Each test attacks B from A's side and checks
that B's app and files are untouched and that no byte of B's markers reaches alice.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.panel.app import load_routes
from corral.panel.routing import registry
from tests.conftest import read_text, wait_for
from tests.support.isolation import Isolated, daemon_call, isolated_panel, run_as
from tests.support.otheruid import can_switch_users

RIGHTS = ["access", "control", "logs", "manage"]
B_APP = "bapp"
SECRET = f"SECRET-{secrets.token_hex(8)}"
B_LOG = f"BLOG-{secrets.token_hex(8)}"

SLEEPER = "import time\nprint('a is up', flush=True)\nwhile True:\n    time.sleep(1)\n"
B_SCRIPT = f"import time\nprint({B_LOG!r}, flush=True)\nwhile True:\n    time.sleep(1)\n"
PROBE = r"""
import os, socket, sys, time
b = {b!r}
def attempt(what, act):
    try:
        act()
        print(what, "OPENED", flush=True)
    except OSError as exc:
        print(what, type(exc).__name__, exc.errno, flush=True)
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(b + "/.corral/corral.sock")
attempt("home", lambda: os.listdir(b))
attempt("secret", lambda: open(b + "/secret.txt").read())
attempt("logs", lambda: os.listdir(b + "/.corral/logs"))
attempt("socket", connect)
while True:
    time.sleep(1)
"""


@dataclass
class World:
    iso: Isolated
    a: str
    b: str
    a_home: Path
    b_home: Path
    a_user: pwd.struct_passwd
    b_user: pwd.struct_passwd

    def b_state(self) -> list[tuple[str, int, Any, str]]:
        """B's processes as B's daemon reports them (asked by root)."""
        rows = daemon_call(self.b_home, "list")
        return sorted((r["name"], r["instance"], r["pid"], r["status"]) for r in rows)

    def b_config(self) -> str:
        answer = self.iso.request(
            "GET", f"/api/v1/tenants/{self.b}/apps/{B_APP}/config", None, "bob"
        )
        assert answer["status"] == 200, answer
        text: str = answer["body"]["text"]
        return text

    def b_files(self) -> dict[str, str]:
        """Every file under B's home with a hash of its content (read by root)."""
        out: dict[str, str] = {}
        for path in sorted(self.b_home.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out


def _own(path: Path, user: pwd.struct_passwd, mode: int) -> None:
    os.lchown(path, user.pw_uid, user.pw_gid)
    if not path.is_symlink():
        path.chmod(mode)


def _write(path: Path, text: str, user: pwd.struct_passwd, mode: int = 0o640) -> None:
    path.write_text(text)
    _own(path, user, mode)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)
    with isolated_panel() as iso:
        a, b = iso.name(), iso.name()
        made = iso.requests(
            {"method": "POST", "path": "/api/v1/admin/tenants", "json": {"name": a}},
            {"method": "POST", "path": "/api/v1/admin/tenants", "json": {"name": b}},
        )
        assert [m["status"] for m in made] == [201, 201], made
        a_id, b_id = (m["body"]["id"] for m in made)
        a_home, b_home = iso.tenants_dir / a, iso.tenants_dir / b
        a_user, b_user = pwd.getpwnam(a), pwd.getpwnam(b)
        _write(a_home / "server.py", SLEEPER, a_user)
        _write(a_home / "probe.py", PROBE.format(b=str(b_home)), a_user)
        _write(b_home / "server.py", B_SCRIPT, b_user)
        _write(b_home / "secret.txt", SECRET + "\n", b_user)
        (b_home / "sub").mkdir()
        _own(b_home / "sub", b_user, 0o755)  # the panel can see it: only confinement refuses
        _write(b_home / "sub" / "server.py", B_SCRIPT, b_user, 0o644)
        put = "PUT"
        answers = iso.requests(
            {"method": put, "path": f"/api/v1/admin/tenants/{a_id}/grants",
             "json": {"grants": {"alice": RIGHTS}}},
            {"method": put, "path": f"/api/v1/admin/tenants/{b_id}/grants",
             "json": {"grants": {"bob": RIGHTS}}},
            {"method": "POST", "path": f"/api/v1/tenants/{a}/apps", "user": "alice",
             "json": {"name": "web", "script": "server.py"}},
            {"method": "POST", "path": f"/api/v1/tenants/{a}/apps", "user": "alice",
             "json": {"name": "probe", "script": "probe.py", "autorestart": False}},
            {"method": "POST", "path": f"/api/v1/tenants/{b}/apps", "user": "bob",
             "json": {"name": "bfirst", "script": "server.py"}},
            {"method": "POST", "path": f"/api/v1/tenants/{b}/apps", "user": "bob",
             "json": {"name": B_APP, "script": "server.py"}},
        )  # fmt: skip
        assert [x["status"] for x in answers] == [200, 200, 201, 201, 201, 201], answers
        w = World(iso, a, b, a_home, b_home, a_user, b_user)
        wait_for(lambda: B_LOG in _b_log_text(w), timeout=30)
        yield w


def _b_log_text(w: World) -> str:
    logs = w.b_home / ".corral" / "logs"
    return "".join(read_text(p) for p in logs.glob(f"{B_APP}*"))


def _hidden(answer: dict[str, Any]) -> bool:
    return answer.get("ws") == 4404 if answer["status"] is None else answer["status"] == 404


def _leaks(answer: dict[str, Any]) -> bool:
    text = json.dumps(answer)
    return SECRET in text or B_LOG in text


BODY = {"name": "x", "script": "server.py", "text": "apps: []\n", "count": 2, "value": "v"}


def test_every_tenant_route_on_b_answers_404_to_alice(world: World) -> None:
    """Every route with a {tenant} (pages, API, log download, WebSockets) named with B
    and B's app: 404 (WebSocket 4404) for alice; B's app keeps its pid, state, config."""
    before, config = world.b_state(), world.b_config()
    load_routes()
    steps: list[dict[str, Any]] = []
    for spec in registry.specs:
        if "{tenant}" not in spec.path:
            continue
        path = spec.path.replace("{tenant}", world.b).replace("{app}", B_APP)
        path = path.replace("{var}", "PORT")
        for method in spec.methods:
            step: dict[str, Any] = {"method": method, "path": path, "user": "alice"}
            if spec.kind == "ws":
                step["ws"] = True
            elif method not in ("GET", "HEAD"):
                step["json"] = BODY
            steps.append(step)
    assert len(steps) >= 40 and sum("ws" in s for s in steps) == 3  # the whole table
    answers = world.iso.requests(*steps)
    wrong = [
        (s["method"], s["path"], a) for s, a in zip(steps, answers, strict=True) if not _hidden(a)
    ]
    assert wrong == []
    assert not any(_leaks(a) for a in answers)
    assert world.b_state() == before and all(row[3] == "online" for row in before)
    assert world.b_config() == config


NAMES = [B_APP, "all", "bapp|bfirst", ".*", "b.*", "..", "../bapp", f"../../{'x'}/bapp",
         "%2e%2e%2fbapp", "..%2Fbapp", "%2F..%2F..%2Fbapp", "bapp%00", "1", "2"]  # fmt: skip


def test_names_and_ids_under_a_never_reach_b(world: World) -> None:
    """alice on /t/A/... with B's app name, B's app ids, `all`, regex-like and `..`-laden
    names, encoded slashes: refused (4xx, today 404), none reads or acts; B's processes
    keep their pids."""
    before = world.b_state()
    b_ids = {str(r["id"]) for r in daemon_call(world.b_home, "list")}
    steps: list[dict[str, Any]] = []
    for name in [*NAMES, *sorted(b_ids)]:
        for path in (f"/api/v1/tenants/{world.a}/apps/{name}",
                     f"/api/v1/tenants/{world.a}/apps/{name}/logs",
                     f"/t/{world.a}/apps/{name}/logs/download",
                     f"/api/v1/tenants/{world.a}/apps/{name}/config"):  # fmt: skip
            steps.append({"method": "GET", "path": path, "user": "alice"})
        for verb in ("stop", "restart", "delete"):
            path = f"/api/v1/tenants/{world.a}/apps/{name}/{verb}"
            steps.append({"method": "POST", "path": path, "user": "alice", "json": {}})
    answers = world.iso.requests(*steps)
    assert not any(_leaks(a) for a in answers)
    # none names an app of A: every one is refused (today: 404), none acts or reads
    acted = [(s["method"], s["path"], a["status"]) for s, a in zip(steps, answers, strict=True)
             if not 400 <= a["status"] < 500]  # fmt: skip
    assert acted == []
    assert world.b_state() == before


def _a_apps(world: World) -> set[str]:
    return {r["name"] for r in daemon_call(world.a_home, "list")}


def test_paths_leaving_a_are_refused_naming_the_field(world: World) -> None:
    """script, cwd, out_file, error_file set to `../B/...`, B's absolute path, or through a
    symlink in A's home into B's: refused by create, import and config edit, each naming
    the field; nothing starts."""
    link = world.a_home / "intob"
    if not link.is_symlink():
        link.symlink_to(world.b_home)
        _own(link, world.a_user, 0)
    bad = [f"../{world.b}/sub/server.py", f"{world.b_home}/sub/server.py", "intob/sub/server.py"]
    dirs = [f"../{world.b}/sub", f"{world.b_home}/sub", "intob/sub"]
    before = _a_apps(world)
    steps: list[tuple[str, dict[str, Any]]] = []
    api = f"/api/v1/tenants/{world.a}/apps"
    for script, cwd in zip(bad, dirs, strict=True):
        created = {"name": "evil", "script": script}
        steps.append(("script", {"method": "POST", "path": api, "json": created}))
        created = {"name": "evil", "script": "server.py", "cwd": cwd}
        steps.append(("cwd", {"method": "POST", "path": api, "json": created}))
    for field_name, values in (("script", bad), ("cwd", dirs), ("out_file", bad),
                               ("error_file", bad)):  # fmt: skip
        for value in values:
            app = f"  - name: evil\n    script: server.py\n    {field_name}: {value}\n"
            if field_name == "script":
                app = f"  - name: evil\n    script: {value}\n"
            text = "apps:\n" + app
            steps.append((field_name, {"method": "POST", "path": f"{api}/import",
                                       "json": {"text": text}}))  # fmt: skip
            edit = app.replace("name: evil", "name: web")
            steps.append((field_name, {"method": "PUT", "path": f"{api}/web/config",
                                       "json": {"text": "apps:\n" + edit}}))  # fmt: skip
    for _, step in steps:
        step["user"] = "alice"
    answers = world.iso.requests(*(s for _, s in steps))
    wrong = []
    for (field_name, step), answer in zip(steps, answers, strict=True):
        errors = answer["body"].get("errors", {}) if isinstance(answer["body"], dict) else {}
        named = any(key.split(".")[-1] == field_name for key in errors)
        if answer["status"] not in (400, 409, 422) or not named:
            wrong.append((field_name, step["path"], step["json"], answer["status"], answer["body"]))
    assert wrong == []
    assert _a_apps(world) == before
    web = [r for r in daemon_call(world.a_home, "list") if r["name"] == "web"]
    assert web and all(str(world.b_home) not in json.dumps(r) for r in web)


RACE_APP = "apps:\n  - name: race\n    script: race/run.py\n" + (
    "    out_file: race/logs/out.log\n    error_file: race/logs/err.log\n    autorestart: false\n"
)
SWAP = r"""
import os, sys
race, b = sys.argv[1], sys.argv[2]
os.remove(race + "/run.py")
os.symlink(b + "/secret.txt", race + "/run.py")
os.rename(race + "/logs", race + "/logs.old")
os.symlink(b + "/.corral/logs", race + "/logs")
"""


def test_a_symlink_raced_in_after_creation_reads_nothing_of_b(world: World) -> None:
    """A valid app, then (as A's uid) its script and log folder swapped for symlinks into
    B's home and the app restarted through the panel: it cannot read B's files, and none
    of B's secret or log lines reaches anything alice can read; B's files are unchanged."""
    race = world.a_home / "race"
    race.mkdir()
    _own(race, world.a_user, 0o755)  # the panel checks paths with its own rights
    (race / "logs").mkdir()
    _own(race / "logs", world.a_user, 0o755)
    _write(race / "run.py", SLEEPER, world.a_user)
    api = f"/api/v1/tenants/{world.a}/apps"
    made = world.iso.request("POST", f"{api}/import", {"text": RACE_APP}, "alice")
    assert made["status"] == 201, made
    [row] = [r for r in daemon_call(world.a_home, "list") if r["name"] == "race"]
    wait_for(lambda: "a is up" in read_text(Path(row["out_log"])))
    files = world.b_files()
    swapped = run_as(world.a_user, ["-c", SWAP, str(race), str(world.b_home)])
    assert swapped.returncode == 0, swapped.stderr
    restarted = world.iso.request("POST", f"{api}/race/restart", {}, "alice")
    assert restarted["status"] in (200, 409, 422, 502), restarted

    def settled() -> bool:
        rows = [r for r in daemon_call(world.a_home, "list") if r["name"] == "race"]
        return bool(rows) and all(r["status"] in ("errored", "stopped") for r in rows)

    wait_for(settled, timeout=30)
    [row] = [r for r in daemon_call(world.a_home, "list") if r["name"] == "race"]
    assert row["exit_code"] not in (None, 0)  # python could not open B's secret as A
    seen = world.iso.requests(
        *({"method": "GET", "path": path, "user": "alice"}
          for path in (f"{api}/race/logs", f"{api}/race/logs?stream=err", f"{api}/race",
                       f"{api}/race/config", f"/t/{world.a}/apps/race/logs",
                       f"/t/{world.a}/apps/race/logs/download",
                       f"/t/{world.a}/apps/race/logs/download?stream=err",
                       f"/t/{world.a}/apps/race", api))
    )  # fmt: skip
    # log views read with A's rights: B's folder behind the symlink is refused (502
    # naming the permission error) or reads as empty; the other views answer as usual
    for answer in seen:
        assert answer["status"] == 200 or (
            answer["status"] == 502 and "Permission denied" in answer["text"]
        ), answer
    assert any(answer["status"] == 502 for answer in seen)
    assert not any(_leaks(answer) for answer in seen)
    assert world.b_files() == files
    assert not any(p.stat().st_uid == world.a_user.pw_uid for p in world.b_home.rglob("*"))


def test_an_app_of_a_gets_permission_errors_on_b(world: World) -> None:
    """A's app, as A's uid, cannot list B's home, read secret.txt, list B's logs or connect
    to B's daemon socket: PermissionError (EACCES) for each, by file modes."""
    path = f"/api/v1/tenants/{world.a}/apps/probe/logs"

    def lines() -> str:
        answer = world.iso.request("GET", path, None, "alice")
        assert answer["status"] == 200, answer
        return str(answer["text"])

    wait_for(lambda: "socket " in lines(), timeout=30)
    text = lines()
    for what in ("home", "secret", "logs", "socket"):
        assert f"{what} PermissionError 13" in text, text
    assert "OPENED" not in text and SECRET not in text


SOCKET_PING = r"""
import errno, sys
from corral.protocol.client import ControlClient
from corral.protocol.wire import ProtocolError
try:
    with ControlClient.connect(sys.argv[1], timeout=10) as client:
        client.call("ping")
    print("ANSWERED")
except PermissionError as exc:
    print("EACCES" if exc.errno == errno.EACCES else repr(exc))
except ProtocolError as exc:
    print(exc.code)
"""


def test_a_daemon_socket_refuses_b_uid(world: World) -> None:
    """B's uid connecting to A's daemon socket: EACCES (or permission_denied)."""
    sock = world.a_home / ".corral" / "corral.sock"
    assert sock.is_socket()
    answer = run_as(world.b_user, ["-c", SOCKET_PING, str(sock)])
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() in ("EACCES", "permission_denied"), answer.stdout
    mine = run_as(world.a_user, ["-c", SOCKET_PING, str(sock)])  # the check can pass
    assert mine.stdout.strip() == "ANSWERED", mine.stdout + mine.stderr
