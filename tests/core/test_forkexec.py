"""fork/exec with listening sockets at fds 3.. (socket activation), with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.core.forkexec import spawn_with_fds
from corral.core.listen import ListenAddress, bind_listeners, close_listeners, parse_listen
from corral.core.osapi import LaunchSpec

REPO = Path(__file__).resolve().parents[2]

# Prints what it received as one JSON line, then serves one connection on every socket.
CHILD = textwrap.dedent(
    """
    import fcntl, json, os, resource, socket, sys
    open_fds = []
    for fd in range(1024):
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue
        open_fds.append([fd, bool(flags & fcntl.FD_CLOEXEC)])
    count = int(os.environ.get("LISTEN_FDS", "0"))
    socks = [socket.socket(fileno=3 + i) for i in range(count)]
    umask = os.umask(0)
    print(json.dumps({
        "pid": os.getpid(),
        "pgrp": os.getpgrp(),
        "env": {k: v for k, v in os.environ.items() if k in ("LISTEN_FDS", "LISTEN_FDNAMES",
                "LISTEN_PID", "X", "Y", "PATH")},
        "fds": open_fds,
        "stdin": os.readlink("/proc/self/fd/0"),
        "names": [str(s.getsockname()) for s in socks],
        "listening": [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks],
        "cwd": os.getcwd(),
        "umask": umask,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    }), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    for s in socks:
        conn, _ = s.accept()
        conn.sendall(b"hello from %d\\n" % os.getpid())
        conn.close()
    """
)


@dataclass
class Run:
    pid: int
    out: int
    err: int

    def info(self) -> dict[str, Any]:
        """The child's first stdout line, as JSON."""
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(self.out, 1)
            if not chunk:
                break
            line += chunk
        assert line, "the child printed nothing"
        result: dict[str, Any] = json.loads(line)
        return result

    def rest(self, fd: int) -> bytes:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return data

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        raise AssertionError(f"child {self.pid} did not exit")


class Spawner:
    """Children, pipes and sockets of one test: all killed/closed at teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.fds: list[int] = []
        self.listeners: list[tuple[list[socket.socket], list[ListenAddress]]] = []

    def listen(self, *texts: str) -> tuple[list[socket.socket], list[ListenAddress]]:
        addrs = [parse_listen(text, allow_ephemeral=True) for text in texts]
        socks = bind_listeners(addrs)
        self.listeners.append((socks, addrs))
        return socks, addrs

    def spawn(
        self,
        spec: LaunchSpec,
        socks: list[socket.socket] | None = None,
        names: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        *,
        in_thread: bool = False,
    ) -> Run:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.fds += [out_r, err_r]
        fds = [s.fileno() for s in socks or []]
        try:
            if in_thread:
                pid = _in_thread(spec, fds, names or [], out_w, err_w, extra_env)
            else:
                pid = spawn_with_fds(spec, fds, names or [], out_w, err_w, extra_env)
        finally:
            os.close(out_w)
            os.close(err_w)
        self.pids.append(pid)
        return Run(pid, out_r, err_r)

    def close(self) -> None:
        for pid in self.pids:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # reaped by the test: its pid may belong to another process now
            if done:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in self.fds:
            os.close(fd)
        for socks, addrs in self.listeners:
            close_listeners(socks, addrs)


def _in_thread(
    spec: LaunchSpec,
    fds: list[int],
    names: list[str],
    out_w: int,
    err_w: int,
    extra_env: dict[str, str] | None,
) -> int:
    """As the daemon does it: from a worker thread."""
    result: list[int | BaseException] = []

    def work() -> None:
        try:
            result.append(spawn_with_fds(spec, fds, names, out_w, err_w, extra_env))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    (value,) = result
    if isinstance(value, BaseException):
        raise value
    return value


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    s = Spawner()
    try:
        yield s
    finally:
        s.close()


def child_spec(tmp_path: Path, **kwargs: Any) -> LaunchSpec:
    env = {"PATH": os.environ.get("PATH", os.defpath), "LISTEN_PID": "1", "X": "spec"}
    return LaunchSpec(
        argv=kwargs.pop("argv", [sys.executable, "-c", CHILD]),
        env=kwargs.pop("env", env),
        cwd=kwargs.pop("cwd", str(tmp_path)),
        **kwargs,
    )


def fetch(addr: ListenAddress, sock: socket.socket) -> bytes:
    if addr.family == socket.AF_UNIX:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(str(addr.path))
    else:
        client = socket.create_connection(sock.getsockname()[:2], timeout=10)
    with client:
        data = b""
        while chunk := client.recv(1024):
            data += chunk
        return data


def zombie_children() -> list[int]:
    me = os.getpid()
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            zombies.append(int(entry))
    return zombies


def open_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            os.fstat(int(name))
            fds.add(int(name))
    return fds


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_child_gets_listening_sockets(spawner: Spawner, tmp_path: Path, in_thread: bool) -> None:
    socks, addrs = spawner.listen("127.0.0.1:0", f"unix:{tmp_path}/app.sock")
    dummy = os.open(os.devnull, os.O_RDONLY)  # inheritable on purpose: must not leak
    os.set_inheritable(dummy, True)
    try:
        before = open_fds()
        run = spawner.spawn(
            child_spec(tmp_path),
            socks,
            [a.name for a in addrs],
            {"X": "extra", "Y": "y"},
            in_thread=in_thread,
        )
        # Nothing leaked in the parent (other threads of this test process may close fds).
        assert open_fds() - before <= {run.out, run.err}
    finally:
        os.close(dummy)
    info = run.info()
    assert info["pid"] == run.pid
    assert info["env"]["LISTEN_PID"] == str(run.pid)
    assert info["env"]["LISTEN_FDS"] == "2"
    assert info["env"]["LISTEN_FDNAMES"] == "tcp-127.0.0.1-0:unix-app.sock"
    assert info["env"]["X"] == "extra" and info["env"]["Y"] == "y"
    assert info["pgrp"] == run.pid  # a process-group leader
    # exactly stdin/out/err and the two sockets, none close-on-exec; the dummy is gone
    assert info["fds"] == [[0, False], [1, False], [2, False], [3, False], [4, False]]
    assert info["stdin"] == "/dev/null"
    assert info["names"] == [str(socks[0].getsockname()), str(addrs[1].path)]
    assert info["listening"] == [1, 1]
    expected = b"hello from %d\n" % run.pid
    assert fetch(addrs[0], socks[0]) == expected  # accepted on fd 3
    assert fetch(addrs[1], socks[1]) == expected  # and on fd 4
    assert run.wait() == 0
    assert run.rest(run.err) == b"to stderr\n"
    assert run.rest(run.out) == b""
    # the daemon's copies stay open and listening
    assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1 for s in socks)


# Run in a fresh interpreter, where the two sockets land on fds 3 and 4 and are passed
# swapped: the moves overlap their own sources.
SWAPPED = textwrap.dedent(
    """
    import os, socket, sys
    from corral.core.forkexec import spawn_with_fds
    from corral.core.osapi import LaunchSpec
    a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen()
    b = socket.socket(); b.bind(("127.0.0.1", 0)); b.listen()
    assert (a.fileno(), b.fileno()) == (3, 4), (a.fileno(), b.fileno())
    code = (
        "import socket; print(socket.socket(fileno=3).getsockname()[1], "
        "socket.socket(fileno=4).getsockname()[1])"
    )
    spec = LaunchSpec(argv=[sys.executable, "-c", code], env={}, cwd="/")
    pid = spawn_with_fds(spec, [4, 3], ["b", "a"], 1, 2)
    os.waitpid(pid, 0)
    print(b.getsockname()[1], a.getsockname()[1], flush=True)
    """
)


def test_overlapping_fds_are_moved_correctly() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SWAPPED],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        close_fds=True,
    )
    assert result.returncode == 0, result.stderr
    child_line, expected_line = result.stdout.splitlines()
    assert child_line == expected_line


def test_cwd_umask_rlimits(spawner: Spawner, tmp_path: Path) -> None:
    socks, addrs = spawner.listen("127.0.0.1:0")
    workdir = tmp_path / "work"
    workdir.mkdir()
    spec = child_spec(tmp_path, cwd=str(workdir), umask=0o027, rlimits={"nofile": 512, "core": 0})
    run = spawner.spawn(spec, socks, [addrs[0].name])
    info = run.info()
    assert info["cwd"] == str(workdir)
    assert info["umask"] == 0o027
    assert info["nofile"] == [512, 512]
    assert info["core"] == [0, 0]
    assert info["env"]["X"] == "spec"
    assert fetch(addrs[0], socks[0]).startswith(b"hello")
    assert run.wait() == 0


def test_program_found_on_the_child_path(spawner: Spawner, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "myserver"
    script.write_text(f"#!{sys.executable}\n{CHILD}")
    script.chmod(0o755)
    env = {"PATH": f"/nonexistent:{bindir}"}
    socks, addrs = spawner.listen("127.0.0.1:0")
    run = spawner.spawn(child_spec(tmp_path, argv=["myserver"], env=env), socks, ["web"])
    info = run.info()
    assert info["env"]["LISTEN_FDNAMES"] == "web"
    assert info["env"]["PATH"] == env["PATH"]
    assert fetch(addrs[0], socks[0]).startswith(b"hello")
    assert run.wait() == 0


def test_signals_reset_and_unblocked(spawner: Spawner, tmp_path: Path) -> None:
    """The child starts with default dispositions and an empty mask, whatever the daemon
    ignores or blocks (SIGPIPE is ignored by Python itself)."""
    old_usr2 = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    old_hup = signal.signal(signal.SIGHUP, lambda *_: None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    try:
        spec = child_spec(tmp_path, argv=["/bin/cat", "/proc/self/status"])
        run = spawner.spawn(spec)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGUSR2, old_usr2)
    assert run.wait() == 0
    status = dict(
        line.split(":\t", 1) for line in run.rest(run.out).decode().splitlines() if ":\t" in line
    )
    assert int(status["SigIgn"], 16) == 0
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigCgt"], 16) == 0


def test_raising_a_hard_limit(spawner: Spawner, tmp_path: Path) -> None:
    """Allowed with CAP_SYS_RESOURCE only; otherwise a PermissionError, not a ValueError."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    spec = child_spec(tmp_path, rlimits={"nofile": hard + 1})
    try:
        run = spawner.spawn(spec)
    except PermissionError as exc:
        assert "setrlimit" in str(exc)
        assert zombie_children() == []
        return
    assert run.info()["nofile"] == [hard + 1, hard + 1]
    assert run.wait() == 0


def test_no_listen_fds_no_listen_vars(spawner: Spawner, tmp_path: Path) -> None:
    run = spawner.spawn(child_spec(tmp_path))
    info = run.info()
    assert "LISTEN_FDS" not in info["env"] and "LISTEN_PID" not in info["env"]
    assert [fd for fd, _ in info["fds"]] == [0, 1, 2]
    assert run.wait() == 0


@pytest.mark.parametrize(
    ("argv", "cwd", "error", "filename"),
    [
        (["no-such-program-corral"], None, FileNotFoundError, "no-such-program-corral"),
        (["/nonexistent/prog"], None, FileNotFoundError, "/nonexistent/prog"),
        (["./not-executable"], None, PermissionError, "./not-executable"),
        (["/bin/true"], "/nonexistent-dir", FileNotFoundError, "/nonexistent-dir"),
    ],
)
def test_exec_failure_raises_in_parent(
    spawner: Spawner,
    tmp_path: Path,
    argv: list[str],
    cwd: str | None,
    error: type[OSError],
    filename: str,
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    socks, addrs = spawner.listen("127.0.0.1:0")
    spec = child_spec(tmp_path, argv=argv, cwd=cwd or str(tmp_path))
    before = open_fds()
    with pytest.raises(error) as info:
        spawner.spawn(spec, socks, [addrs[0].name])
    assert info.value.filename == filename
    assert zombie_children() == []
    assert open_fds() - before <= set(spawner.fds)  # no fd leaked by the failed spawn
    # the sockets are still the daemon's, and still listening
    assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_bad_arguments(spawner: Spawner, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown rlimit"):
        spawner.spawn(child_spec(tmp_path, rlimits={"bogus": 1}))
    with pytest.raises(ValueError, match="differ in length"):
        spawn_with_fds(child_spec(tmp_path), [0], [], 1, 2)
    with pytest.raises(ValueError, match="LISTEN_FDNAMES"):
        spawn_with_fds(child_spec(tmp_path), [0], ["a:b"], 1, 2)
    with pytest.raises(KeyError):
        spawner.spawn(child_spec(tmp_path, user="no-such-user-corral"))
    assert zombie_children() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_runs_as_another_user(spawner: Spawner, tmp_path: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    socks, addrs = spawner.listen("127.0.0.1:0")
    spec = child_spec(
        tmp_path,
        argv=["/usr/bin/python3", "-c", CHILD],
        cwd="/",
        user="nobody",
        rlimits={"nofile": 300},
    )
    run = spawner.spawn(spec, socks, [addrs[0].name])
    info = run.info()
    assert (info["uid"], info["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert info["groups"] == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    assert info["nofile"] == [300, 300]
    assert info["env"]["LISTEN_PID"] == str(run.pid)
    assert fetch(addrs[0], socks[0]) == b"hello from %d\n" % run.pid
    assert run.wait() == 0
