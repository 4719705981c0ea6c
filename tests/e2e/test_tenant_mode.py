"""A tenant daemon's confinement (SPEC 2.2, issue 9), on real daemons.

Part one: the app limit (CORRAL_APP_LIMIT) through every way an app can be created, on a
daemon of the test's own uid. Part two (root): a daemon running as a temporary tenant user,
reached by a temporary panel user through a 0660 socket of the panel's group, and by no
third user, as the privileged helper sets it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.paths import Home
from corral.protocol.client import ControlClient
from corral.protocol.wire import ErrorCode, ProtocolError
from tests.support.otheruid import (
    can_switch_users,
    kill_user_processes,
    temp_user,
    world_dir,
    world_python,
)

from ..conftest import Corral, read_text, wait_for

pytestmark = pytest.mark.slow

SLEEPER = "import time\ntime.sleep(600)\n"


def start_limited(corral: Corral, limit: str | None) -> Corral:
    if limit is not None:
        corral.env["CORRAL_APP_LIMIT"] = limit
    corral.start_daemon()
    return corral


@pytest.fixture
def limited(corral: Corral) -> Corral:
    """A daemon allowed two apps."""
    return start_limited(corral, "2")


def names(corral: Corral) -> set[str]:
    return {record["name"] for record in corral.jlist()}


def config(corral: Corral, name: str, **extra: Any) -> dict[str, Any]:
    script = corral.write(f"{name}.py", SLEEPER)
    cfg = AppConfig(
        name=name, script=str(script), interpreter=sys.executable, cwd=str(corral.workdir), **extra
    )
    return cfg.to_dict()


def refused(corral: Corral, cmd: str, **args: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        corral.call(cmd, **args)
    return caught.value


def pids(corral: Corral) -> dict[tuple[str, int], int]:
    return {(r["name"], r["instance"]): r["pid"] for r in corral.jlist()}


# ------------------------------------------------------------------ the app limit


def test_the_third_app_is_refused_naming_the_numbers(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.start_app("b", SLEEPER)
    error = refused(limited, "start", apps=[config(limited, "c")])
    assert error.code == ErrorCode.LIMIT_REACHED
    assert error.message == "the app limit is reached: 2 of 2 apps; delete one first"
    assert names(limited) == {"a", "b"}
    # The CLI says it in one line and fails.
    script = limited.write("d.py", SLEEPER)
    result = limited.cli("start", str(script), "--name", "d")
    assert result.code != 0
    assert result.err.strip().count("\n") == 0
    assert "the app limit is reached: 2 of 2 apps" in result.err
    assert names(limited) == {"a", "b"}
    assert limited.call("ping")["app_limit"] == 2
    assert limited.call("host")["app_limit"] == 2


def test_a_request_with_more_new_apps_than_room_creates_none(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    two = [config(limited, "b"), config(limited, "c")]
    for cmd in ("start", "restart", "reload"):  # restart/reload with configs add new apps
        error = refused(limited, cmd, apps=two)
        assert error.code == ErrorCode.LIMIT_REACHED, cmd
        assert "1 of 2 apps" in error.message and "adds 2" in error.message
        assert names(limited) == {"a"}
    # One new app and one existing one fit.
    limited.call("start", apps=[config(limited, "a"), config(limited, "b")], force=True)
    assert names(limited) == {"a", "b"}


def test_restart_or_reload_with_a_new_config_counts_it(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.call("restart", apps=[config(limited, "b")])
    assert names(limited) == {"a", "b"}
    error = refused(limited, "reload", apps=[config(limited, "c")])
    assert error.code == ErrorCode.LIMIT_REACHED
    assert names(limited) == {"a", "b"}


def test_existing_apps_never_count(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.start_app("b", SLEEPER)
    limited.call("scale", target="a", count="+2")
    limited.call("restart", target="a")
    limited.call("reload", target="b")
    limited.call("restart", apps=[config(limited, "a", instances=3)])
    limited.call("configure", apps=[config(limited, "b", env={"X": "1"})])
    limited.call("stop", target="all")
    limited.call("start", target="a")
    limited.call("start", apps=[config(limited, "b")])  # a stopped app started by config
    limited.call("start", apps=[config(limited, "b")], force=True)  # replaced while running
    limited.ok("stop", "b")
    limited.ok("start", "b")
    records = limited.jlist()
    assert {r["name"] for r in records} == {"a", "b"}
    assert sum(1 for r in records if r["name"] == "a") == 3
    wait_for(lambda: all(r["status"] == "online" for r in limited.jlist()))


def test_delete_frees_a_slot(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.start_app("b", SLEEPER)
    assert refused(limited, "start", apps=[config(limited, "c")]).code == ErrorCode.LIMIT_REACHED
    limited.ok("delete", "b")
    limited.call("start", apps=[config(limited, "c")])
    assert names(limited) == {"a", "c"}


def test_resurrect_cannot_exceed_the_limit_and_is_all_or_nothing(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.start_app("b", SLEEPER)
    limited.ok("save")
    limited.ok("delete", "all")
    limited.start_app("x", SLEEPER)
    error = refused(limited, "resurrect")
    assert error.code == ErrorCode.LIMIT_REACHED
    assert "1 of 2 apps" in error.message and "adds 2" in error.message
    assert names(limited) == {"x"}
    result = limited.cli("resurrect")
    assert result.code != 0 and "app limit" in result.err
    assert names(limited) == {"x"}
    limited.ok("delete", "x")
    limited.ok("resurrect")
    assert names(limited) == {"a", "b"}


def test_a_dump_written_by_hand_cannot_exceed_it(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    limited.ok("save")
    dump = json.loads(limited.home.dump.read_text())
    template = dump["apps"][0]
    dump["apps"] = [
        {**template, "config": {**template["config"], "name": f"n{i}"}} for i in range(5)
    ]
    limited.home.dump.write_text(json.dumps(dump))
    assert refused(limited, "resurrect").code == ErrorCode.LIMIT_REACHED
    assert names(limited) == {"a"}


def test_two_requests_at_once_cannot_share_the_last_slot(limited: Corral) -> None:
    limited.start_app("a", SLEEPER)
    configs = [config(limited, "b"), config(limited, "c")]
    clients = [limited.client(), limited.client()]
    try:
        for client, cfg in zip(clients, configs, strict=True):
            client.send("start", apps=[cfg])
        replies = [client.read() for client in clients]
    finally:
        for client in clients:
            client.close()
    outcomes = sorted(bool(reply["ok"]) for reply in replies)
    assert outcomes == [False, True], replies
    failed = next(reply for reply in replies if not reply["ok"])
    assert failed["error"]["code"] == "limit_reached"
    assert len(names(limited)) == 2


def test_limit_zero_refuses_any_app(corral: Corral) -> None:
    start_limited(corral, "0")
    error = refused(corral, "start", apps=[config(corral, "a")])
    assert error.code == ErrorCode.LIMIT_REACHED
    assert error.message == "the app limit is 0: no app may be created here"
    assert names(corral) == set()
    assert corral.call("ping")["app_limit"] == 0


@pytest.mark.parametrize("limit", ["-1", None])
def test_minus_one_or_absent_is_unlimited(corral: Corral, limit: str | None) -> None:
    start_limited(corral, limit)
    assert corral.call("ping")["app_limit"] == -1
    corral.call("start", apps=[config(corral, f"app{i}") for i in range(6)])
    assert len(names(corral)) == 6


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORRAL_APP_LIMIT", "lots"),
        ("CORRAL_APP_LIMIT", "-2"),
        ("CORRAL_APP_LIMIT", ""),
        ("CORRAL_PANEL_UID", "-5"),
        ("CORRAL_PANEL_GID", "staff"),
    ],
)
def test_a_bad_value_stops_the_daemon_with_status_2_and_says_why(
    corral: Corral, variable: str, value: str
) -> None:
    env = {**corral.env, variable: value}
    proc = subprocess.run(
        [sys.executable, "-m", "corral.core.daemon"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    log = read_text(corral.home.daemon_log)
    assert "ERROR" in log and "refusing to start" in log and variable in log, log
    assert variable in proc.stderr
    assert not corral.home.socket.exists()
    # The CLI starting such a daemon says so in one line.
    result = corral.cli("ls", env=env)
    assert result.code != 0 and "exit status 2" in result.err
    assert result.err.strip().count("\n") == 0


def test_set_app_limit_lowering_stops_nothing_and_refuses_new_apps(corral: Corral) -> None:
    start_limited(corral, "3")
    for name in ("a", "b", "c"):
        corral.start_app(name, SLEEPER)
    before = pids(corral)
    if os.geteuid() != 0:
        # The tenant's own uid: refused, unchanged.
        error = refused(corral, "set_app_limit", limit=1)
        assert error.code == ErrorCode.PERMISSION_DENIED
        assert corral.call("ping")["app_limit"] == 3
        pytest.skip("the rest needs root (the daemon's peer when it is not the tenant)")
    assert corral.call("set_app_limit", limit=1) == {"limit": 1}
    assert corral.call("ping")["app_limit"] == 1
    assert pids(corral) == before  # nothing stopped
    assert all(r["status"] == "online" for r in corral.jlist())
    error = refused(corral, "start", apps=[config(corral, "d")])
    assert error.message == "the app limit is reached: 3 of 1 apps; delete one first"
    corral.call("restart", target="a")  # existing apps still work
    corral.ok("delete", "a")
    corral.ok("delete", "b")
    assert refused(corral, "start", apps=[config(corral, "d")]).code == ErrorCode.LIMIT_REACHED
    corral.ok("delete", "c")
    corral.call("start", apps=[config(corral, "d")])
    assert corral.call("set_app_limit", limit=-1) == {"limit": -1}
    corral.call("start", apps=[config(corral, f"e{i}") for i in range(3)])
    assert len(names(corral)) == 4


@pytest.mark.parametrize("bad", ["3", True, -2, None, 1.0])
def test_set_app_limit_refuses_bad_values(limited: Corral, bad: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemon's own uid may not call set_app_limit")
    error = refused(limited, "set_app_limit", limit=bad)
    assert error.code == ErrorCode.INVALID_ARGUMENT
    assert "'limit' must be a whole number >= -1" in error.message
    assert limited.call("ping")["app_limit"] == 2


def test_the_daemon_restarted_with_a_lower_limit_keeps_its_apps(corral: Corral) -> None:
    """Apps admitted under an earlier limit stay (the state file is not a new request);
    no new one is accepted, and the daemon's log says why."""
    start_limited(corral, "3")
    for name in ("a", "b", "c"):
        corral.start_app(name, SLEEPER)
    corral.call("kill")
    assert corral._daemon_popen is not None
    corral._daemon_popen.wait(timeout=30)
    start_limited(corral, "1")
    assert names(corral) == {"a", "b", "c"}
    assert refused(corral, "start", apps=[config(corral, "d")]).code == ErrorCode.LIMIT_REACHED
    wait_for(lambda: "over its app limit of 1" in read_text(corral.home.daemon_log))


# ------------------------------------------------------------------ other uids (root)

CALL_AS = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.__class__.__name__, "errno": exc.errno}))
    sys.exit(0)
request = {"id": 1, "cmd": sys.argv[2], "args": json.loads(sys.argv[3])}
s.sendall(json.dumps(request).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"reply": json.loads(data) if data.strip() else None}))
"""


@dataclass
class TenantSetup:
    base: Path
    tenant: pwd.struct_passwd
    panel: pwd.struct_passwd
    stranger: pwd.struct_passwd
    home_dir: Path
    home: Home
    python: Path
    process: subprocess.Popen[bytes] | None = None

    def env(self, app_limit: str = "2") -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home_dir),
            "USER": self.tenant.pw_name,
            "LOGNAME": self.tenant.pw_name,
            "LANG": "C.UTF-8",
            "CORRAL_HOME": str(self.home.root),
            "CORRAL_TENANT": self.tenant.pw_name,
            "CORRAL_PANEL_UID": str(self.panel.pw_uid),
            "CORRAL_PANEL_GID": str(self.panel.pw_gid),
            "CORRAL_APP_LIMIT": app_limit,
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def start(self, app_limit: str = "2") -> None:
        """The tenant's daemon, as the helper starts it."""
        self.process = subprocess.Popen(
            [str(self.python), "-m", "corral.core.daemon"],
            env=self.env(app_limit),
            cwd=self.home_dir,
            user=self.tenant.pw_uid,
            group=self.tenant.pw_gid,
            extra_groups=[],
            umask=0o027,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = read_text(self.home.daemon_log)
            raise AssertionError(f"the daemon exited ({self.process.returncode}): {log}")
        try:
            self.root_call("ping")
        except OSError:
            return False
        return True

    def root_call(self, cmd: str, **args: Any) -> Any:
        with ControlClient.connect(self.home.socket, timeout=30) as client:
            return client.call(cmd, **args)

    def call_as(self, user: pwd.struct_passwd, cmd: str, **args: Any) -> dict[str, Any]:
        out = subprocess.run(
            [str(self.python), "-c", CALL_AS, str(self.home.socket), cmd, json.dumps(args)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ProtocolError):
                self.root_call("kill")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        kill_user_processes(self.tenant.pw_uid)
        self.process.wait(timeout=10)


@pytest.fixture
def setup() -> Iterator[TenantSetup]:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)
    python = world_python()
    base = world_dir("ctt")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        panel = stack.enter_context(temp_user())
        stranger = stack.enter_context(temp_user())
        home_dir = base / "t"
        tenant = stack.enter_context(temp_user(home=home_dir))
        # As the helper makes them: home tenant:panel-group 0750, .corral 02750.
        os.chown(home_dir, tenant.pw_uid, panel.pw_gid)
        home_dir.chmod(0o750)
        corral_dir = home_dir / ".corral"
        corral_dir.mkdir()
        os.chown(corral_dir, tenant.pw_uid, panel.pw_gid)
        corral_dir.chmod(0o2750)
        scripts = base / "scripts"  # apps' scripts, readable by the tenant
        scripts.mkdir(mode=0o755)
        scripts.chmod(0o755)
        instance = TenantSetup(
            base=base,
            tenant=tenant,
            panel=panel,
            stranger=stranger,
            home_dir=home_dir,
            home=Home(corral_dir),
            python=python,
        )
        stack.callback(kill_user_processes, tenant.pw_uid)
        stack.callback(instance.stop)
        yield instance


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def app_config(setup: TenantSetup, name: str) -> dict[str, Any]:
    script = setup.base / "scripts" / f"{name}.py"
    script.write_text(SLEEPER)
    script.chmod(0o644)
    cfg = AppConfig(name=name, script=str(script), interpreter="/usr/bin/python3", cwd="/")
    return cfg.to_dict()


def log_of(setup: TenantSetup) -> str:
    return read_text(setup.home.daemon_log)


def test_socket_and_home_modes_let_the_panels_group_in_and_nobody_else(
    setup: TenantSetup,
) -> None:
    corral_dir = setup.home.root
    setup.home.logs.mkdir()  # too open: tightened
    os.chown(setup.home.logs, setup.tenant.pw_uid, setup.tenant.pw_gid)
    setup.home.logs.chmod(0o755)
    setup.start()
    info = os.stat(setup.home.socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (setup.tenant.pw_uid, setup.panel.pw_gid)
    assert mode_of(corral_dir) == 0o2750
    assert os.stat(corral_dir).st_gid == setup.panel.pw_gid
    assert mode_of(setup.home.logs) == 0o700
    assert mode_of(setup.home.daemon_log) == 0o600
    daemon_pid = setup.root_call("ping")["pid"]
    assert os.stat(f"/proc/{daemon_pid}").st_uid == setup.tenant.pw_uid


def test_the_panels_user_can_use_the_socket_and_apps_run_as_the_tenant(
    setup: TenantSetup,
) -> None:
    setup.start()
    ping = setup.call_as(setup.panel, "ping")["reply"]
    assert ping["ok"] is True and ping["result"]["app_limit"] == 2
    started = setup.call_as(setup.panel, "start", apps=[app_config(setup, "web")])["reply"]
    assert started["ok"] is True, started
    listed = setup.call_as(setup.panel, "list")["reply"]
    assert listed["ok"] is True
    [record] = listed["result"]
    assert record["name"] == "web"
    pid = wait_for(lambda: setup.root_call("list")[0]["pid"])
    assert os.stat(f"/proc/{pid}").st_uid == setup.tenant.pw_uid


def test_a_third_user_is_refused_by_file_modes_and_by_the_peer_check(
    setup: TenantSetup,
) -> None:
    setup.start()
    setup.root_call("start", apps=[app_config(setup, "secretive")])
    # As set up: the home (0750, panel's group) is closed to B.
    assert setup.call_as(setup.stranger, "list")["connect_error"] == "PermissionError"
    # Let B traverse the directories: the 0660 socket alone still refuses it (EACCES).
    setup.home_dir.chmod(0o751)
    setup.home.root.chmod(0o2751)
    result = setup.call_as(setup.stranger, "list")
    assert result == {"connect_error": "PermissionError", "errno": 13}
    # Even a socket opened to everyone: SO_PEERCRED refuses B's uid.
    setup.home.socket.chmod(0o666)
    reply = setup.call_as(setup.stranger, "list")["reply"]
    assert reply["ok"] is False
    assert reply["error"] == {"code": "permission_denied", "message": "permission denied"}
    assert "secretive" not in json.dumps(reply)
    refusal = f"refused a control connection from uid {setup.stranger.pw_uid}"
    wait_for(lambda: refusal in read_text(setup.home.daemon_log))
    # The tenant and the panel still get in.
    assert setup.call_as(setup.panel, "list")["reply"]["ok"] is True
    assert setup.call_as(setup.tenant, "list")["reply"]["ok"] is True


def test_set_app_limit_from_root_or_the_panel_but_never_the_tenant(setup: TenantSetup) -> None:
    setup.start()
    assert setup.root_call("set_app_limit", limit=5) == {"limit": 5}
    assert setup.root_call("ping")["app_limit"] == 5
    by_panel = setup.call_as(setup.panel, "set_app_limit", limit=1)["reply"]
    assert by_panel == {"id": 1, "ok": True, "result": {"limit": 1}}
    assert setup.root_call("ping")["app_limit"] == 1
    by_tenant = setup.call_as(setup.tenant, "set_app_limit", limit=-1)["reply"]
    assert by_tenant["ok"] is False
    assert by_tenant["error"] == {
        "code": "permission_denied",
        "message": "only the panel may change the app limit",
    }
    assert setup.root_call("ping")["app_limit"] == 1
    # The limit holds against the panel's requests too.
    assert setup.call_as(setup.panel, "start", apps=[app_config(setup, "one")])["reply"]["ok"]
    second = setup.call_as(setup.panel, "start", apps=[app_config(setup, "two")])["reply"]
    assert second["error"]["code"] == "limit_reached"
    assert "1 of 1 apps" in second["error"]["message"]


def test_a_home_not_of_the_panels_group_gets_a_0600_socket_and_a_warning(
    setup: TenantSetup,
) -> None:
    os.chown(setup.home.root, setup.tenant.pw_uid, setup.tenant.pw_gid)
    setup.home.root.chmod(0o2750)
    setup.start()
    assert mode_of(setup.home.root) == 0o700  # not the panel's group: nothing kept
    assert mode_of(setup.home.socket) == 0o600
    warning = f"not the panel's ({setup.panel.pw_gid}): it stays 0600"
    wait_for(lambda: warning in log_of(setup))
    assert setup.call_as(setup.panel, "ping")["connect_error"] == "PermissionError"


def test_a_corral_dir_opened_too_wide_is_tightened_even_if_it_locks_the_panel_out(
    setup: TenantSetup,
) -> None:
    """Group write is never kept. The tenant's chmod cannot keep the setgid bit of a
    directory whose group it is not in (the kernel drops it), so the socket gets the
    tenant's group and stays 0600: closed, and the log says why."""
    setup.home.root.chmod(0o2770)
    setup.start()
    assert mode_of(setup.home.root) == 0o750
    assert mode_of(setup.home.socket) == 0o600
    wait_for(lambda: "stays 0600" in log_of(setup))
    assert setup.call_as(setup.panel, "ping")["connect_error"] == "PermissionError"
