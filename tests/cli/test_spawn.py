"""corral.cli.spawn: the daemon a CLI spawns is detached and takes nothing of its caller.

Real daemons, spawned the way `corral start` spawns them (os.posix_spawn).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.cli.spawn import DaemonProcess, spawn

from ..conftest import Corral, wait_for


@pytest.fixture
def spawned(corral: Corral, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DaemonProcess]]:
    """The daemons a test spawns in `corral`'s home; stopped and reaped afterwards."""
    for key, value in corral.env.items():
        monkeypatch.setenv(key, value)
    procs: list[DaemonProcess] = []
    try:
        yield procs
    finally:
        corral.shutdown()
        for proc in procs:
            if proc.wait(10) is None:  # not one corral knew of: stop it ourselves
                os.kill(proc.pid, 9)
                proc.wait(10)


def _listening(corral: Corral) -> bool:
    try:
        corral.call("ping")
    except OSError:
        return False
    return True


def _spawn(corral: Corral, spawned: list[DaemonProcess]) -> DaemonProcess:
    proc = spawn(str(corral.home.root))
    spawned.append(proc)
    wait_for(lambda: _listening(corral))
    corral._remember_daemon()
    assert corral.daemon_pid() == proc.pid
    return proc


def test_the_daemon_is_detached_and_keeps_no_descriptor_of_its_caller(
    corral: Corral, spawned: list[DaemonProcess]
) -> None:
    # What a shell or a CI runner may leave open in the CLI: an inheritable pipe. A
    # daemon that kept its write end would hang `out=$(corral start ...)` forever.
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        proc = _spawn(corral, spawned)
        os.close(write_end)
        write_end = -1
        os.set_blocking(read_end, False)  # a writer left somewhere: BlockingIOError
        assert os.read(read_end, 1) == b""  # end of file: nobody else holds the pipe
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert proc.poll() is None and proc.wait(0.05) is None  # it runs on
    fds = Path(f"/proc/{proc.pid}/fd")
    assert [os.readlink(fds / str(fd)) for fd in (0, 1, 2)] == [os.devnull] * 3
    assert os.getsid(proc.pid) == proc.pid  # a session of its own: no terminal, no SIGHUP
    assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-P" in argv


def test_the_daemon_imports_nothing_from_the_current_directory(
    corral: Corral,
    spawned: list[DaemonProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python -m corral.core.daemon` run from a folder holding a `corral` package would
    import that one, were the current directory on its path."""
    marker = tmp_path / "imported"
    planted = tmp_path / "cwd" / "corral" / "core"
    planted.mkdir(parents=True)
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("../__init__.py", "__init__.py", "daemon.py"):
        (planted / name).write_text(plant)
    monkeypatch.chdir(tmp_path / "cwd")
    _spawn(corral, spawned)
    assert not marker.exists()


def test_the_exit_status_of_a_daemon_that_refuses_to_start(
    corral: Corral, spawned: list[DaemonProcess]
) -> None:
    proc = spawn(str(corral.home.root), {"CORRAL_APP_LIMIT": "many"})
    spawned.append(proc)
    assert proc.wait(30) == 2  # tenancy settings it cannot read: refused, and logged
    assert proc.poll() == 2
    assert "CORRAL_APP_LIMIT" in corral.home.daemon_log.read_text()
