"""Fixtures for the privileged helper: a real `corral helper` process (root), a real panel
user, real tenants (system users), and connections made by the panel's uid.

A connection "as the panel" is made by a child process running as the panel's uid (the
world-readable Python of tests/support/otheruid.py): it connects to the helper's socket
and hands the connected socket back over a socketpair (SCM_RIGHTS). SO_PEERCRED records
the uid of whoever called connect(), so the helper sees the panel's uid while the test
reads and writes the socket itself.

Every user a test creates (`ct` + hex) is deleted at teardown, with its processes and
home, even when the test failed; the helper is stopped first.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.client import ControlClient
from corral.protocol.wire import ProtocolError
from tests.conftest import read_text, wait_for
from tests.support.otheruid import (
    can_switch_users,
    remove_user,
    temp_user,
    world_dir,
    world_python,
)

CORRAL = Path(sys.executable).parent / "corral"
Socket = socket.socket  # HelperProcess.socket (a path) hides the module in its methods

_HAND_OVER = r"""
import socket, sys
out = socket.socket(fileno=int(sys.argv[2]))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    out.sendall(b"E" + type(exc).__name__.encode())
else:
    socket.send_fds(out, [b"K"], [sock.fileno()])
"""


def need_root() -> None:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)


def connect_as(user: pwd.struct_passwd, path: Path) -> socket.socket:
    """A socket connected to `path` by a process running as `user` (no other groups).
    Raises PermissionError (or the error's type) when that user cannot connect."""
    ours, theirs = socket.socketpair()
    with ours:
        try:
            result = subprocess.run(
                [str(world_python()), "-c", _HAND_OVER, str(path), str(theirs.fileno())],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                pass_fds=(theirs.fileno(),),
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            theirs.close()
        assert result.returncode == 0, result.stderr
        message, fds, _flags, _addr = socket.recv_fds(ours, 64, 1)
    if message.startswith(b"E"):
        kind = message[1:].decode()
        raise PermissionError(kind) if kind == "PermissionError" else OSError(kind)
    return socket.socket(fileno=fds[0])


def run_as(user: pwd.struct_passwd, code: str, *args: str) -> Any:
    """Run `code` with the world Python as `user` (no other groups); it prints one JSON
    value, returned here."""
    result = subprocess.run(
        [str(world_python()), "-c", code, *args],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pidfd_of(pid: int, uid: int) -> int:
    """A pidfd of `pid`, checked (after opening) to be a process of `uid`."""
    fd = os.pidfd_open(pid)
    status = Path(f"/proc/{pid}/status").read_text()
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if real_uid != uid:
        os.close(fd)
        raise AssertionError(f"pid {pid} is not a process of uid {uid}")
    return fd


def exited(pidfd: int) -> bool:
    """True once the process of `pidfd` has exited (never confused by a reused pid)."""
    ready, _, _ = select.select([pidfd], [], [], 0)
    return bool(ready)


def proc_status(pid: int) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


@dataclass
class HelperProcess:
    """A running `corral helper` and what it was given."""

    proc: subprocess.Popen[bytes]
    socket: Path
    tenants_dir: Path
    state_dir: Path
    panel: pwd.struct_passwd
    python: Path
    log: Path

    def client(self) -> ControlClient:
        client = ControlClient(connect_as(self.panel, self.socket))
        client.set_timeout(90)
        return client

    def call(self, cmd: str, **args: Any) -> Any:
        with self.client() as client:
            return client.call(cmd, **args)

    def refused(self, cmd: str, **args: Any) -> ProtocolError:
        """The error the helper answers `cmd` with (the test fails if it succeeds)."""
        with pytest.raises(ProtocolError) as caught:
            self.call(cmd, **args)
        return caught.value

    def exchange(self, data: bytes, sock: Socket | None = None) -> list[dict[str, Any]]:
        """Send raw bytes as the panel, close our side, return every reply line."""
        sock = sock or connect_as(self.panel, self.socket)
        with sock:
            sock.settimeout(90)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return [json.loads(line) for line in received.splitlines() if line.strip()]

    def home(self, tenant: str) -> Path:
        return self.tenants_dir / tenant

    def audit(self) -> list[dict[str, Any]]:
        text = read_text(self.state_dir / "audit.log")
        return [json.loads(line) for line in text.splitlines()]

    def registry(self) -> dict[str, dict[str, Any]]:
        text = read_text(self.state_dir / "tenants.json")
        if not text:
            return {}
        return {entry["tenant"]: entry for entry in json.loads(text)["tenants"]}

    def snapshot(self) -> tuple[str, list[str]]:
        """What a refused request must leave as it was: the registry and the homes."""
        return read_text(self.state_dir / "tenants.json"), sorted(os.listdir(self.tenants_dir))

    def assert_serving(self) -> None:
        assert self.proc.poll() is None, read_text(self.log)
        assert self.call("ping")["panel_uid"] == self.panel.pw_uid

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def helper_command(
    panel: str, sock: Path, tenants_dir: Path, state_dir: Path, python: Path, *extra: str
) -> list[str]:
    return [
        str(CORRAL),
        "helper",
        "--panel-user",
        panel,
        "--socket",
        str(sock),
        "--tenants-dir",
        str(tenants_dir),
        "--state-dir",
        str(state_dir),
        "--python",
        str(python),
        *extra,
    ]


@dataclass
class HelperFactory:
    """Starts helpers (stopped at teardown) and hands out tenant names (deleted at
    teardown, with their users, groups, processes and homes)."""

    panel: pwd.struct_passwd
    dirs: list[Path] = field(default_factory=list)
    helpers: list[HelperProcess] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def start(
        self,
        state_dir: Path | None = None,
        tenants_dir: Path | None = None,
        sock: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> HelperProcess:
        """A new helper (fresh folders unless given), once it listens."""
        sock = sock or self.dir() / "h.sock"
        tenants_dir = tenants_dir or self.dir()
        state_dir = state_dir or self.dir() / "state"
        log = self.dir() / "helper.log"
        python = world_python()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                helper_command(self.panel.pw_name, sock, tenants_dir, state_dir, python, *extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        helper = HelperProcess(proc, sock, tenants_dir, state_dir, self.panel, python, log)
        self.helpers.append(helper)

        def up() -> bool:
            assert proc.poll() is None, f"the helper exited: {read_text(log)}"
            return "listening on" in read_text(log)

        wait_for(up, timeout=60)
        return helper

    def name(self) -> str:
        name = f"ct{secrets.token_hex(3)}"
        self.names.append(name)
        return name

    def group(self) -> str:
        """A name that is only a group (for clashes); deleted at teardown."""
        name = self.name()
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        self.groups.append(name)
        return name

    def dir(self) -> Path:
        """A fresh world-traversable temp dir, deleted at teardown."""
        path = world_dir()
        self.dirs.append(path)
        return path

    def close(self) -> None:
        for helper in self.helpers:
            helper.stop()
        for name in self.names:
            remove_user(name)
            subprocess.run(["groupdel", name], capture_output=True)
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def panel_user() -> Iterator[pwd.struct_passwd]:
    need_root()
    with temp_user("ctp") as user:
        yield user


@pytest.fixture
def helpers(panel_user: pwd.struct_passwd) -> Iterator[HelperFactory]:
    factory = HelperFactory(panel_user)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def helper(helpers: HelperFactory) -> HelperProcess:
    return helpers.start()


@pytest.fixture
def new_name(helpers: HelperFactory) -> Callable[[], str]:
    return helpers.name


@pytest.fixture
def scratch(helpers: HelperFactory) -> Path:
    return helpers.dir()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[HelperProcess, HelperFactory]]:
    """One helper for a module of refusal tests (each refusal leaves nothing to clean)."""
    need_root()
    with temp_user("ctp") as panel:
        factory = HelperFactory(panel)
        try:
            yield factory.start(), factory
        finally:
            factory.close()


def daemon_env(helper: HelperProcess, tenant: str, app_limit: int) -> dict[str, str]:
    """The environment the foundation gives a tenant daemon, exactly."""
    home = helper.home(tenant)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "USER": tenant,
        "LOGNAME": tenant,
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "CORRAL_TENANT": tenant,
        "CORRAL_PANEL_UID": str(helper.panel.pw_uid),
        "CORRAL_PANEL_GID": str(helper.panel.pw_gid),
        "CORRAL_APP_LIMIT": str(app_limit),
    }


@contextlib.contextmanager
def root_process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process of root's that tests check is never signalled; stopped on exit."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
