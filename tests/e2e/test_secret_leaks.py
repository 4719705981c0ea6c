"""A secret's value appears nowhere but in its app's environment (issue 8, "How it is shown").

One world per module (per xdist worker): a tenant daemon started as the panel starts one
(CORRAL_TENANT set), a secret set through the real CLI on stdin, apps started from a
config file that names it, logs rotated and gzipped, the app list saved, the daemon killed
and resurrected; then a real panel on a SQLite file sets more secrets through its form
and its JSON API, replaces one, removes one, restarts the app, and every page and API
route a tenant manager (and an admin) can GET is fetched. Every value is fresh and random.

The app proves it sees each value by writing its SHA-256 (never the value) to a file.
Then each test searches one kind of place for every value and its base64 and hex forms
(tests/support/leaks.py): files, CLI output, protocol answers and events, error
messages, the daemon's environment, panel answers, the audit log, the panel's database
file, the panel's log records. The child's own /proc/<pid>/environ is the positive
control: the scan must find the value there, or it proves nothing.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import html
import json
import logging
import os
import pty
import select
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.paths import Home
from corral.protocol.wire import ProtocolError, encode_message

from ..conftest import Corral, wait_for
from ..support.leaks import SPECIAL, LeakScan, RecordCollector, forms_of, leak_value
from ..support.panel import short_dir

TENANT = "acme"
APP = "web"
SEEN_AT_THE_END = ("LEAK_CLI", "LEAK_TTY", "LEAK_FORM", "LEAK_API")
"""The secrets the app has at its last start (LEAK_GONE was set, then removed)."""
OTHER = "other"
"""An app of the same tenant without secrets: it must never see another app's."""
SEER = '''\
"""Writes {"pid", "seen": {NAME: sha256(value)}} for its LEAK_* variables, never a value;
then enough output to rotate its logs, then idles."""
import hashlib, json, os, pathlib, sys, time

out = pathlib.Path(sys.argv[1])
seen = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in os.environ.items()
        if k.startswith("LEAK_")}
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps({"pid": os.getpid(), "seen": seen}))
os.replace(tmp, out)
print("started with", sorted(seen), flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
plain = os.environ.get("PLAIN_SETTING", "")
for n in range(120):
    print("filler", n, "plain setting", plain, flush=True)
while True:
    time.sleep(1)
'''


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- what the world collects ------------------------------------------------------------


class EventListener:
    """Everything a `subscribe` connection (events and all logs) receives, raw, until the
    daemon goes away or `close()`."""

    def __init__(self, socket_path: Path) -> None:
        self.data = bytearray()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(socket_path))
        request = {"id": 1, "cmd": "subscribe", "args": {"events": True, "logs": "all"}}
        self._sock.sendall(encode_message(request))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def close(self) -> bytes:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._sock.close()
        return bytes(self.data)


@dataclass
class World:
    corral: Corral
    base: Path
    tenant_home: Path
    values: dict[str, list[str]]
    """Variable name -> every value it was ever given (the newest last)."""
    cli: dict[str, str] = field(default_factory=dict)
    """`corral ...` command -> its stdout and stderr."""
    answers: dict[str, str] = field(default_factory=dict)
    """Protocol request -> its result or error, as JSON text."""
    errors: dict[str, str] = field(default_factory=dict)
    """What corral said to a bad request carrying a value (CLI, protocol, panel)."""
    events: dict[str, bytes] = field(default_factory=dict)
    panel: dict[str, str] = field(default_factory=dict)
    """Panel request -> status, headers and body."""
    audit_rows: list[str] = field(default_factory=list)
    panel_home: Path | None = None
    panel_logs: list[str] = field(default_factory=list)
    environ_checks: dict[str, bytes] = field(default_factory=dict)
    """/proc/<pid>/environ and cmdline of the daemons, taken while they ran."""
    child_environ: bytes = b""
    other_environ: bytes = b""
    seen: dict[str, dict[str, str]] = field(default_factory=dict)
    """Which LEAK_* variables each app saw at its last start, with their hashes."""
    exported_configs: dict[str, str] = field(default_factory=dict)
    unticked_form: str = ""
    """The Environment form refused (409) for a secret's name given as a plain variable."""

    control: str = field(default_factory=lambda: leak_value("crlPLAIN"))
    """A plain variable's value (PLAIN_SETTING), which the app also prints: found where
    plain values legitimately go (state, dump, env, logs, events, config), it proves that
    each place was really searched."""

    def all_values(self) -> list[str]:
        return [v for values in self.values.values() for v in values]

    def scan(self) -> LeakScan:
        return LeakScan(self.all_values())

    def search(self, items: Iterable[tuple[str, str | bytes]]) -> tuple[LeakScan, set[str]]:
        """Search every (place, content) for the secrets, and for the control value:
        the scan, and the places where the control was found."""
        scan, control = self.scan(), LeakScan([self.control])
        for where, content in items:
            scan.text(where, content)
            control.text(where, content)
        return scan, {h.where for h in control.hits}


def _unique(seen: dict[str, Any], label: str) -> str:
    """`label`, or `label (2)`, `label (3)`...: a command run twice keeps both outputs."""
    n, key = 1, label
    while key in seen:
        n += 1
        key = f"{label} ({n})"
    return key


def _run_cli(world: World, label: str, *args: str, stdin: str | None = None) -> Any:
    result = world.corral.cli(*args, input=stdin)
    world.cli[_unique(world.cli, label)] = f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def _ok_cli(world: World, *args: str, stdin: str | None = None) -> Any:
    result = _run_cli(world, "corral " + " ".join(args), *args, stdin=stdin)
    assert result.code == 0, f"corral {' '.join(args)} failed: {result.err}{result.out}"
    return result


def _call(world: World, cmd: str, **args: Any) -> Any:
    result = world.corral.call(cmd, **args)
    label = _unique(world.answers, f"{cmd} {json.dumps(args, sort_keys=True)}")
    world.answers[label] = json.dumps(result)
    return result


def _refused(world: World, label: str, cmd: str, **args: Any) -> str:
    try:
        result = world.corral.call(cmd, **args)
    except ProtocolError as exc:
        message = f"{exc.code}: {exc}"
    else:
        raise AssertionError(f"{label}: accepted ({result!r}), expected a refusal")
    world.errors[f"protocol {label}"] = message
    return message


def _seen(world: World, app: str, pid: int) -> dict[str, str]:
    path = world.tenant_home / f"seen-{app}.json"

    def current() -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if data["pid"] == pid else None

    seen: dict[str, str] = wait_for(current, timeout=30)["seen"]
    world.seen[app] = seen
    return seen


def _online_pid(world: World, app: str, not_pid: int | None = None) -> int:
    def ready() -> int | None:
        record = world.corral.proc(app)
        pid = record["pid"]
        if record["status"] == "online" and pid and pid != not_pid:
            return int(pid)
        return None

    pid: int = wait_for(ready, timeout=30)
    return pid


def _proc_bytes(pid: int, what: str) -> bytes:
    return Path(f"/proc/{pid}/{what}").read_bytes()


def _config_yaml(world: World) -> str:
    def app(name: str, secrets: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "script": str(world.tenant_home / "app" / "seer.py"),
            "args": [str(world.tenant_home / f"seen-{name}.json")],
            "interpreter": sys.executable,
            "cwd": str(world.tenant_home),
            "env": {"PLAIN_SETTING": world.control},
            "secrets": secrets,
            "log_max_size": "2K",
            "log_retain": 5,
            "log_compress": True,
        }

    # JSON is YAML: no quoting questions.
    return json.dumps({"apps": [app(APP, ["LEAK_CLI"]), app(OTHER, [])]}, indent=2)


# --- the daemon and the CLI ------------------------------------------------------------


def _daemon_part(world: World) -> None:
    corral = world.corral
    listener = EventListener(corral.home.socket)
    try:
        _cli_part(world)
    finally:
        world.events["subscription before the restart"] = listener.close()
    _save_kill_resurrect(world)


def _cli_part(world: World) -> None:
    value = world.values["LEAK_CLI"][0]
    _ok_cli(world, "secret", "set", APP, "LEAK_CLI", stdin=value + "\n")
    (world.tenant_home / "corral.yaml").write_text(_config_yaml(world))
    _ok_cli(world, "start", "corral.yaml")
    pid = _online_pid(world, APP)
    assert _seen(world, APP, pid) == {"LEAK_CLI": sha(value)}, "the app did not get its secret"
    other = _online_pid(world, OTHER)
    assert _seen(world, OTHER, other) == {}, "another app got the secret"
    world.child_environ = _proc_bytes(pid, "environ")
    world.other_environ = _proc_bytes(other, "environ")
    _remember_daemon_environ(world, "first daemon")
    _wait_for_rotated_logs(world)
    _bad_requests(world, value)
    tty_value = world.values["LEAK_TTY"][0]
    code, shown = _tty_secret_set(world, "LEAK_TTY", [tty_value, tty_value])
    world.cli["corral secret set web LEAK_TTY (on a terminal)"] = shown.decode(errors="replace")
    assert code == 0, shown
    gone = world.values["LEAK_GONE"][0]
    _ok_cli(world, "secret", "set", APP, "LEAK_RM", stdin=gone)
    _ok_cli(world, "secret", "rm", APP, "LEAK_RM")
    # Every read-only command, and the commands that answer with tables.
    commands: list[tuple[str, ...]] = [
        ("ls",),
        ("jlist",),
        ("prettylist",),
        ("describe", APP),
        ("describe", "all"),
        ("env", APP),
        ("env", "all"),
        ("logs", "--lines", "1000"),
        ("logs", APP, "--lines", "1000", "--json"),
        ("secret", "ls"),
        ("secret", "ls", APP),
        ("secret", "ls", "--json"),
        ("secret", "ls", APP, "--json"),
        ("metrics",),
        ("get",),
        ("save",),
    ]
    for command in commands:
        _ok_cli(world, *command)
    requests: list[tuple[str, dict[str, Any]]] = [
        ("list", {}),
        ("describe", {"target": APP}),
        ("env", {"target": "all"}),
        ("log_files", {"target": None}),
        ("tail", {"target": APP, "lines": 1000}),
        ("secret_list", {"app": None}),
        ("secret_list", {"app": APP}),
        ("metrics", {}),
        ("get", {"key": None}),
    ]
    for cmd, args in requests:
        _call(world, cmd, **args)
    want = {"LEAK_CLI": sha(value), "LEAK_TTY": sha(tty_value)}
    _ok_cli(world, "restart", APP)
    pid = _online_pid(world, APP, not_pid=pid)
    assert _seen(world, APP, pid) == want, "lost at restart"
    _ok_cli(world, "reload", APP)
    pid = _online_pid(world, APP, not_pid=pid)
    assert _seen(world, APP, pid) == want, "lost at reload"


def _wait_for_rotated_logs(world: World) -> None:
    logs = world.corral.home.logs

    def rotated() -> list[Path]:
        return [p for p in logs.iterdir() if p.name.endswith(".gz")]

    wait_for(rotated, timeout=30)


def _bad_requests(world: World, value: str) -> None:
    """Requests carrying a value that must be refused without repeating it."""
    refused: list[tuple[str, dict[str, Any]]] = [
        ("bad name", {"app": APP, "name": "1-NOT-A-NAME", "value": value}),
        ("NUL in the value", {"app": APP, "name": "LEAK_X", "value": value + "\0tail"}),
        ("value too long", {"app": APP, "name": "LEAK_X", "value": value + "x" * 65536}),
        ("bad app name", {"app": "../" + APP, "name": "LEAK_X", "value": value}),
        ("value not a string", {"app": APP, "name": "LEAK_X", "value": [value]}),
    ]
    for label, args in refused:
        _refused(world, f"secret_set, {label}", "secret_set", **args)
    # A broken client: the daemon's answer to a malformed line must not quote it.
    body = json.dumps({"app": APP, "name": "LEAK_X", "value": value}, ensure_ascii=False)
    broken = {
        "truncated JSON": f'{{"id": 1, "cmd": "secret_set", "args": {body}'.encode(),
        "not UTF-8": f'{{"id": 1, "cmd": "secret_set", "args": {body}}}'.encode() + b"\xff",
        "misspelt command": f'{{"id": 1, "cmd": "secret-set", "args": {body}}}'.encode(),
    }
    for label, line in broken.items():
        world.errors[f"protocol, {label}"] = _raw_exchange(world, line + b"\n").decode()
    mistakes: list[tuple[str, tuple[str, ...], str]] = [
        ("bad name", ("secret", "set", APP, "1-NOT-A-NAME"), value + "\n"),
        ("value on the command line", ("secret", "set", APP, "LEAK_X", value), ""),
        ("NAME=VALUE", ("secret", "set", APP, f"LEAK_X={value}"), ""),
        ("--value option", ("secret", "set", APP, "LEAK_X", f"--value={value}"), ""),
        ("value as an option", ("secret", "set", APP, "LEAK_X", f"--{value}"), ""),
        ("NUL in the value", ("secret", "set", APP, "LEAK_X"), value + "\0\n"),
        ("value too long", ("secret", "set", APP, "LEAK_X"), value * 2100),
    ]
    for label, argv, stdin in mistakes:
        result = world.corral.cli(*argv, input=stdin)
        world.errors[f"CLI {label}"] = f"{result.out}\n{result.err}"
        assert result.code != 0, f"corral secret set with {label} was accepted"
    typed = world.values["LEAK_TTY"][0]  # a prompt takes one line
    code, output = _tty_secret_set(world, "LEAK_X", [typed, typed + "x"])
    world.errors["CLI prompt, the two values differ"] = output.decode(errors="replace")
    assert code != 0, "two different values at the prompt were accepted"


def _raw_exchange(world: World, line: bytes) -> bytes:
    """Send one raw line to the daemon; its one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(world.corral.home.socket))
        sock.sendall(line)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert b'"ok": false' in answer or b'"ok":false' in answer, answer
    return answer


def _tty_secret_set(world: World, name: str, answers: list[str]) -> tuple[int, bytes]:
    """`corral secret set APP NAME` on a terminal of its own (a pty, its controlling tty):
    each answer typed after its prompt. Returns the exit code and all the terminal showed,
    where an echoed value would be."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (nothing else is safe after a fork)
        try:
            os.chdir(world.tenant_home)
            argv = [sys.executable, "-m", "corral", "secret", "set", APP, name]
            os.execve(sys.executable, argv, world.corral.env)
        finally:
            os._exit(127)
    shown = bytearray()
    try:
        for n, answer in enumerate(answers, 1):
            _read_terminal(fd, shown, functools.partial(_prompts_shown, shown, n))
            os.write(fd, answer.encode() + b"\n")
        _read_terminal(fd, shown, lambda: False)
    finally:
        os.close(fd)
        status = _reap(pid)
    return os.waitstatus_to_exitcode(status), bytes(shown)


def _reap(pid: int) -> int:
    """Wait for our child; killed if it is still there after 30 s (an unreaped child's pid
    cannot be reused, so the signal reaches it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _prompts_shown(shown: bytearray, count: int) -> bool:
    return shown.count(b": ") >= count


def _read_terminal(fd: int, shown: bytearray, enough: Callable[[], bool]) -> None:
    """Read what the terminal shows until `enough()` or the end (the child closed it)."""
    deadline = time.monotonic() + 30
    while not enough():
        left = deadline - time.monotonic()
        assert left > 0, f"the terminal showed only {bytes(shown)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child exited and closed the terminal
            return
        if not chunk:
            return
        shown += chunk


def _remember_daemon_environ(world: World, label: str) -> None:
    pid = world.corral.daemon_pid()
    assert pid is not None
    for what in ("environ", "cmdline"):
        world.environ_checks[f"{label} /proc/{pid}/{what}"] = _proc_bytes(pid, what)


def _save_kill_resurrect(world: World) -> None:
    """The dump must be enough to bring the app back with its secret, without holding it."""
    value = world.values["LEAK_CLI"][0]
    want = {"LEAK_CLI": sha(value), "LEAK_TTY": sha(world.values["LEAK_TTY"][0])}
    _ok_cli(world, "save")
    _ok_cli(world, "kill")
    _ok_cli(world, "ping")  # a new daemon, with the CLI's environment; apps from state.json
    listener = EventListener(world.corral.home.socket)
    try:
        pid = _online_pid(world, APP)
        assert _seen(world, APP, pid) == want, "lost with the daemon"
        _ok_cli(world, "delete", "all")  # the apps go; their secrets stay
        _ok_cli(world, "resurrect")  # the apps from dump.json
        pid = _online_pid(world, APP)
        assert _seen(world, APP, pid) == want, "lost at resurrect"
        _ok_cli(world, "secret", "rotate-key")
        _ok_cli(world, "restart", APP)
        pid = _online_pid(world, APP, not_pid=pid)
        assert _seen(world, APP, pid) == want, "lost at rotate-key"
        _remember_daemon_environ(world, "resurrected daemon")
        _ok_cli(world, "jlist")
        _ok_cli(world, "describe", APP)
    finally:
        world.events["subscription after resurrect"] = listener.close()


# --- the world --------------------------------------------------------------------------


def _tenant_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CORRAL_TENANT": TENANT,  # as the panel's starter sets it
    }


@pytest.fixture(scope="module")
def home_world() -> Iterator[World]:
    base = short_dir("csl")
    tenant_home = base / TENANT
    (tenant_home / "app").mkdir(parents=True)
    (tenant_home / "app" / "seer.py").write_text(SEER)
    corral = Corral(
        home=Home(tenant_home / ".corral"), env=_tenant_env(tenant_home), workdir=tenant_home
    )
    values = {
        "LEAK_CLI": [leak_value(special=SPECIAL + "\t\n")],
        "LEAK_TTY": [leak_value()],  # typed at a prompt: one line
        "LEAK_FORM": [leak_value(special=SPECIAL + "\t\n")],
        "LEAK_API": [leak_value()],  # then replaced by one with SPECIAL
        "LEAK_GONE": [leak_value()],
    }
    world = World(corral, base, tenant_home, values)
    try:
        corral.start_daemon()
        _daemon_part(world)
        yield world
    finally:
        corral.shutdown()
        shutil.rmtree(base, ignore_errors=True)


# --- the panel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(home_world: World) -> Iterator[World]:
    from corral.panel.gateway import NoAutostart
    from tests.support.panel import add_tenant, grant, make_app, open_session, quick_user

    world = home_world
    world.panel_home = world.base / "panel"
    collector = RecordCollector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    try:
        app, panel = make_app(
            world.panel_home,
            starter=NoAutostart(),
            allowed_hosts=("testserver",),
            tenants_root=world.base / "made",
        )
        try:
            tenant = add_tenant(panel, TENANT, world.tenant_home)
            admin = quick_user(panel, "root", admin=True)
            manager = quick_user(panel, "mgr")
            grant(panel, manager, tenant, ("access", "control", "logs", "manage"))
            clients = {}
            for name, user_id in (("mgr", manager), ("root", admin)):
                cookie = open_session(panel, user_id)
                client = TestClient(app, follow_redirects=False)
                client.cookies.set(cookie.name, cookie.token)
                clients[name] = (client, cookie.csrf)
            # The app has no git source: a deploy id of the right form gets the 404 page.
            ids = {"user_id": str(manager), "tenant_id": str(tenant.id)}
            ids["deploy_id"] = "20260101T000000Z-000000"
            _panel_part(world, app, clients, ids)
            world.audit_rows = _audit_rows(panel)
        finally:
            panel.database.close()
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
        world.panel_logs = collector.lines
    yield world


def _record(world: World, label: str, response: Any) -> None:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    world.panel[label] = f"{response.status_code}\n{headers}\n\n{response.text}"


def _panel_part(
    world: World,
    app: Starlette,
    clients: dict[str, tuple[TestClient, str]],
    ids: dict[str, str],
) -> None:
    from tests.support.panel import ORIGIN

    client, csrf = clients["mgr"]
    api = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    env_page = f"/t/{TENANT}/apps/{APP}/env"
    env_api = f"/api/v1/tenants/{TENANT}/apps/{APP}/env"

    def put(name: str, value: str, label: str) -> Any:
        response = client.put(
            f"{env_api}/{name}", json={"value": value, "secret": True}, headers=api
        )
        _record(world, label, response)
        return response

    # The form: a new secret variable.
    form = {"csrf_token": csrf, "name": "LEAK_FORM", "value": world.values["LEAK_FORM"][0],
            "secret": "on"}  # fmt: skip
    response = client.post(env_page, data=form, headers={"Origin": ORIGIN})
    _record(world, "POST form LEAK_FORM", response)
    assert response.status_code in (200, 303), response.text
    if response.status_code == 303:
        _record(world, "POST form LEAK_FORM, then", client.get(response.headers["location"]))
    # The API: a new one, replaced by another value, and one set then removed.
    assert put("LEAK_API", world.values["LEAK_API"][0], "PUT LEAK_API").status_code == 200
    world.values["LEAK_API"].append(leak_value(special=SPECIAL))
    assert put("LEAK_API", world.values["LEAK_API"][1], "PUT LEAK_API again").status_code == 200
    assert put("LEAK_GONE", world.values["LEAK_GONE"][0], "PUT LEAK_GONE").status_code == 200
    response = client.delete(f"{env_api}/LEAK_GONE", headers=api)
    _record(world, "DELETE LEAK_GONE", response)
    assert response.status_code == 200, response.text
    # Bad requests carrying a value: refused without repeating it.
    bad = leak_value()
    world.values["LEAK_REFUSED"] = [bad]
    for label, name in (("bad name", "1-BAD"), ("too long", "X" * 300)):
        response = client.put(f"{env_api}/{name}", json={"value": bad, "secret": True}, headers=api)
        world.errors[f"panel API PUT, {label}"] = response.text
        assert response.status_code >= 400, f"PUT with a {label} was accepted"
        bad_form = {**form, "name": name, "value": bad}
        response = client.post(env_page, data=bad_form, headers={"Origin": ORIGIN})
        world.errors[f"panel form, {label}"] = response.text
        assert response.status_code >= 400, f"the form with a {label} was accepted"
    response = client.put(
        f"{env_api}/LEAK_X", json={"value": bad + "\0", "secret": True}, headers=api
    )
    world.errors["panel API PUT, NUL in the value"] = response.text
    too_long = {"value": bad * (65536 // len(bad) + 1), "secret": True}
    response = client.put(f"{env_api}/LEAK_X", json=too_long, headers=api)
    world.errors["panel API PUT, value too long"] = response.text
    assert response.status_code >= 400, "a value over 64 KiB was accepted"
    # A secret's name given again as a plain variable (the box left unticked): refused, the
    # value not shown back (the name says it is a secret's).
    response = client.put(f"{env_api}/LEAK_API", json={"value": bad}, headers=api)
    world.errors["panel API PUT, a secret's name as a plain variable"] = response.text
    assert response.status_code == 409, response.text
    plain = {"csrf_token": csrf, "name": "LEAK_FORM", "value": bad, "apply": "restart"}
    response = client.post(env_page, data=plain, headers={"Origin": ORIGIN})
    world.unticked_form = response.text  # see test_a_secrets_name_..._is_not_shown_back
    assert response.status_code == 409, response.status_code
    # Saving never restarts: restart through the panel, then the app sees the newest values.
    old = world.corral.proc(APP)["pid"]
    response = client.post(f"/api/v1/tenants/{TENANT}/apps/{APP}/restart", headers=api)
    _record(world, "POST restart", response)
    assert response.status_code == 200, response.text
    pid = _online_pid(world, APP, not_pid=old)
    want = {name: sha(world.values[name][-1]) for name in SEEN_AT_THE_END}
    assert _seen(world, APP, pid) == want, "the app does not see the panel's secrets"
    world.child_environ = _proc_bytes(pid, "environ")
    _remember_daemon_environ(world, "daemon after the panel")
    _ok_cli(world, "secret", "ls", "--json")
    _ok_cli(world, "env", APP)
    _ok_cli(world, "save")
    _walk_routes(world, clients, ids)
    for name in ("mgr", "root"):
        who, _ = clients[name]
        for path in (
            f"/t/{TENANT}/apps/{APP}/config",
            f"/api/v1/tenants/{TENANT}/apps/{APP}/config",
        ):
            world.exported_configs[f"{name} GET {path}"] = who.get(path).text


def _walk_routes(
    world: World, clients: dict[str, tuple[TestClient, str]], ids: dict[str, str]
) -> None:
    """GET every page and API route, as the tenant manager and as an admin."""
    from corral.panel.app import load_routes
    from corral.panel.routing import registry

    load_routes()
    values = {"tenant": TENANT, "app": APP, **ids}
    for spec in registry.specs:
        if spec.kind == "ws" or "GET" not in spec.methods:
            continue
        path = spec.path
        unknown = [p for p in spec.params if p not in values]
        if unknown:
            raise AssertionError(f"GET {path}: no value for {unknown} (add it to the walk)")
        for name, value in values.items():
            path = path.replace("{" + name + "}", value).replace("{" + name + ":int}", value)
        for who in ("mgr", "root"):
            client, _ = clients[who]
            for query in ("", "?lines=1000") if "logs" in path else ("",):
                response = client.get(path + query)
                _record(world, f"{who} GET {path}{query}", response)
                assert response.status_code < 500, f"GET {path}: {response.status_code}"


def _audit_rows(panel: Any) -> list[str]:
    from tests.support.panel import audit_entries

    rows = []
    for entry in audit_entries(panel):
        columns = {c.name: getattr(entry, c.name) for c in entry.__table__.columns}
        rows.append(json.dumps(columns, default=str, ensure_ascii=False))
    return rows


# --- the scanner itself (quick) ---------------------------------------------------------


def test_the_scan_finds_every_form_even_inside_longer_texts() -> None:
    value = leak_value()
    raw = value.encode()
    wrapped = [
        ("plain", f"NAME={value}; ".encode()),
        ("base64 at offset 1", base64.b64encode(b"X" + raw + b"!")),
        ("base64 at offset 2", base64.b64encode(b"XY" + raw)),
        ("urlsafe at offset 0", base64.urlsafe_b64encode(raw + b"\n")),
        ("hex", b"0x" + raw.hex().encode()),
        ("HEX", raw.hex().upper().encode()),
        ("utf-16", f"<{value}>".encode("utf-16-le")),
    ]
    for label, blob in wrapped:
        assert LeakScan([value]).text(label, blob), label
    folder = short_dir("csg")
    try:
        (folder / "x.log.gz").write_bytes(gzip.compress(b"log line " + raw))
        assert LeakScan([value]).file(folder / "x.log.gz")
    finally:
        shutil.rmtree(folder)
    clean = LeakScan([value])
    assert not clean.text("another value", leak_value() + base64.b64encode(raw[:-3]).decode())
    assert {f.label for f in forms_of(value)} >= {"the value", "base64", "hex", "HEX"}


def test_a_value_with_special_characters_is_found_however_it_is_quoted() -> None:
    value = leak_value(special=SPECIAL + "\t\n")
    quoted = {
        "JSON": json.dumps({"v": value}),
        "JSON, ASCII only": json.dumps({"v": value}, ensure_ascii=True),
        "HTML": html.escape(value),
        "URL": urllib.parse.quote(value),
        "form": urllib.parse.urlencode({"value": value}),
        "shell": shlex.quote(value),
        "repr": repr(value),
        "base64 of NAME=value": base64.b64encode(f"NAME={value}".encode()).decode(),
        "hex of a JSON document": json.dumps({"v": value}).encode().hex(),
        "only the second half": value[len(value) // 2 :],
    }
    for label, text in quoted.items():
        assert LeakScan([value]).text(label, text), label


# --- the places ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_app_sees_its_secrets_and_the_scan_finds_them_in_its_environment(
    world: World,
) -> None:
    """The positive control: the value is in the child's environment and nowhere else."""
    want = {name: sha(world.values[name][-1]) for name in SEEN_AT_THE_END}
    assert world.seen[APP] == want
    assert world.seen[OTHER] == {}
    scan = world.scan()
    found = scan.text(f"/proc/<{APP}>/environ", world.child_environ)
    assert {h.form for h in found} >= {"the value of value #1"}, found
    assert f"LEAK_CLI={world.values['LEAK_CLI'][0]}".encode() in world.child_environ
    assert not scan.text(f"/proc/<{OTHER}>/environ", world.other_environ)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_file_under_the_tenant_home_holds_a_value(world: World) -> None:
    root = world.corral.home.root
    files = sorted(p for p in world.tenant_home.rglob("*") if p.is_file() and not p.is_symlink())
    scan, control = world.search((p.relative_to(root).as_posix() if p.is_relative_to(root)
                                  else str(p), p.read_bytes()) for p in files)  # fmt: skip
    gunzipped = LeakScan(world.all_values())
    gz_control = LeakScan([world.control])
    for path in files:
        if path.name.endswith(".gz"):
            gunzipped.text(f"{path.name} (gunzipped)", gzip.decompress(path.read_bytes()))
            gz_control.text(path.name, gzip.decompress(path.read_bytes()))
    # What corral writes was there to search, and holds what it should (the plain value).
    for expected in ("state.json", "dump.json", "secrets.json", "corral.log",
                     f"logs/{APP}-out-0.log", f"logs/{APP}-err-0.log"):  # fmt: skip
        assert expected in scan.places, f"{expected} was not searched: {scan.places}"
    assert {"state.json", "dump.json", f"logs/{APP}-out-0.log"} <= control, control
    assert gz_control.hits, "no rotated, gzipped log with the app's output was searched"
    scan.hits += gunzipped.hits
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_cli_output_holds_a_value(world: World) -> None:
    scan, control = world.search(world.cli.items())
    scan.assert_clean()
    assert {f"corral env {APP}", "corral logs --lines 1000"} <= control, control
    env = world.cli[f"corral env {APP}"]
    assert "LEAK_CLI=(secret)" in env and "LEAK_TTY=(secret)" in env, env
    assert "LEAK_CLI" in world.cli["corral secret ls --json"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_protocol_answer_or_event_holds_a_value(world: World) -> None:
    for label, data in world.events.items():
        assert b'"transition"' in data, f"{label}: no event was received"
    items: list[tuple[str, str | bytes]] = [(f"protocol {k}", v) for k, v in world.answers.items()]
    items += world.events.items()
    scan, control = world.search(items)
    scan.assert_clean()
    # (`logs: "all"` follows the apps there at subscribe time: the first one had none.)
    assert {'protocol env {"target": "all"}', "subscription after resurrect"} <= control, control


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_error_message_holds_a_value(world: World) -> None:
    assert len(world.errors) >= 15, sorted(world.errors)
    scan, _ = world.search(world.errors.items())
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_secrets_name_given_as_a_plain_variable_is_not_shown_back(world: World) -> None:
    """The box left unticked by mistake, on a name that is a secret: the page refuses it
    (409) and must not show the value typed, which is most likely the new secret."""
    assert "LEAK_FORM" in world.unticked_form
    scan, _ = world.search([("the form refused with 409", world.unticked_form)])
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_daemon_environment_or_command_line_holds_a_value(world: World) -> None:
    assert len(world.environ_checks) >= 6
    items = list(world.environ_checks.items())
    for proc in world.corral.started:
        if proc.is_running():  # psutil: the same process, not a reused pid
            with contextlib.suppress(OSError):
                items.append((f"daemon {proc.pid} now", _proc_bytes(proc.pid, "environ")))
    for label, data in items:
        if label.endswith("environ"):
            assert f"CORRAL_TENANT={TENANT}".encode() in data, label
    scan, _ = world.search(items)
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_panel_page_or_api_answer_holds_a_value(world: World) -> None:
    assert len(world.panel) > 40, sorted(world.panel)
    scan, control = world.search((f"panel {k}", v) for k, v in world.panel.items())
    scan.assert_clean()
    env_api = f"mgr GET /api/v1/tenants/{TENANT}/apps/{APP}/env"
    logs_api = f"mgr GET /api/v1/tenants/{TENANT}/apps/{APP}/logs?lines=1000"
    assert {f"panel {env_api}", f"panel {logs_api}"} <= control, control
    assert all(name in world.panel[env_api] for name in SEEN_AT_THE_END), world.panel[env_api]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_audit_log_names_variables_never_values(world: World) -> None:
    items = [("audit table row", row) for row in world.audit_rows]
    items += [(f"panel {k}", v) for k, v in world.panel.items() if "audit" in k]
    assert len(items) >= 10, [k for k, _ in items]
    scan, _ = world.search(items)
    scan.assert_clean()
    rows = "\n".join(world.audit_rows)
    for name in ("LEAK_FORM", "LEAK_API", "LEAK_GONE"):
        assert name in rows, f"no audit entry names {name}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_panel_database_file_never_holds_a_value(world: World) -> None:
    assert world.panel_home is not None
    files = sorted(p for p in world.panel_home.rglob("*") if p.is_file())
    assert "panel.db" in [p.name for p in files], files
    contents = [(str(p), p.read_bytes()) for p in files]
    # The real database, uncompressed: the audit's text is in it.
    assert any(b"LEAK_FORM" in data for _, data in contents), "the audit is not in the file"
    scan, _ = world.search(contents)
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_panel_log_record_holds_a_value(world: World) -> None:
    assert world.panel_logs
    scan, _ = world.search([("the panel's log records", "\n".join(world.panel_logs))])
    scan.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exported_configs_keep_secret_names_never_values(world: World) -> None:
    assert len(world.exported_configs) == 4
    scan, control = world.search(world.exported_configs.items())
    scan.assert_clean()
    assert control == set(world.exported_configs), "a config lost its plain env"
    for label, text in world.exported_configs.items():
        assert "LEAK_CLI" in text, f"{label}: the secrets list is lost:\n{text}"


# --- a secret also exported in the shell that runs `corral start` ------------------------


@pytest.mark.slow
def test_a_secret_exported_in_the_shell_is_not_stored_with_the_app(daemon: Corral) -> None:
    """`export DB_PASSWORD=...; corral secret set api DB_PASSWORD <<<"$DB_PASSWORD";
    corral start corral.yaml`: the app gets the secret (which comes last), and the copy
    in the CLI's environment is of no use to it, so it must not be stored either."""
    value = leak_value()
    daemon.ok("secret", "set", "api", "DB_PASSWORD", input=value)
    seen = daemon.workdir / "seen.json"
    daemon.write("seer.py", SEER)
    config = {"apps": [{"name": "api", "script": str(daemon.workdir / "seer.py"),
                        "args": [str(seen)], "interpreter": sys.executable,
                        "secrets": ["DB_PASSWORD"]}]}  # fmt: skip
    daemon.write("corral.yaml", json.dumps(config))
    daemon.ok("start", "corral.yaml", env={**daemon.env, "DB_PASSWORD": value})
    pid = wait_for(lambda: daemon.proc("api")["status"] == "online" and daemon.proc("api")["pid"])
    assert f"DB_PASSWORD={value}".encode() in _proc_bytes(pid, "environ")
    daemon.ok("save")
    daemon.ok("restart", "api", "--update-env", env={**daemon.env, "DB_PASSWORD": value})
    scan = LeakScan([value])
    scan.tree(daemon.home.root)
    assert {"state.json", "dump.json"} <= {Path(p).name for p in scan.places}
    scan.assert_clean()
