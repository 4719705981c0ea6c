"""Stopping instances left behind by a killed daemon, with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from corral.core.orphans import is_same_process, process_start_time, stop_orphans

IGNORE_STOP_SIGNALS = (
    "import signal; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); "
)

# A grandchild that ignores the stop signals, and says when it is set up.
GRANDCHILD = IGNORE_STOP_SIGNALS + "print('ok', flush=True); import time; time.sleep(60)"

# A group leader whose child stays in its group; it prints the child's pid when ready.
LEADER_WITH_GRANDCHILD = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


class Procs:
    """Processes started by one test; all of them are killed at teardown, pass or fail."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[str]] = []
        self.others: list[tuple[int, float]] = []

    def start(self, code: str, *, new_session: bool = True) -> subprocess.Popen[str]:
        popen = subprocess.Popen(
            [sys.executable, "-c", code],
            start_new_session=new_session,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.popens.append(popen)
        return popen

    def start_ready(self, code: str, *, new_session: bool = True) -> subprocess.Popen[str]:
        """Start `code` and wait for its first line (printed once it is set up)."""
        code += "\nprint('ready', flush=True)\nimport time; time.sleep(60)"
        popen = self.start(code, new_session=new_session)
        assert popen.stdout is not None
        assert popen.stdout.readline() == "ready\n"
        return popen

    def track(self, pid: int) -> float:
        """Register a process we are not the parent of; returns its start time."""
        start = process_start_time(pid)
        assert start is not None
        self.others.append((pid, start))
        return start

    def cleanup(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                # Not reaped yet, so its pid (and group id) cannot have been reused.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.kill()
            popen.wait()
            if popen.stdout is not None:
                popen.stdout.close()
        for pid, start in self.others:
            if is_same_process(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs() -> Iterator[Procs]:
    registry = Procs()
    try:
        yield registry
    finally:
        registry.cleanup()


def record(popen: subprocess.Popen[str]) -> tuple[int, float]:
    start = process_start_time(popen.pid)
    assert start is not None
    return popen.pid, start


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_is_same_process(procs: Procs) -> None:
    popen = procs.start("import time; time.sleep(60)")
    pid, start = record(popen)
    assert is_same_process(pid, start)
    assert is_same_process(pid, start + 0.005)
    assert not is_same_process(pid, start - 1.0)
    assert not is_same_process(pid, start + 0.5)


def test_gone_and_zombie_processes(procs: Procs) -> None:
    popen = procs.start("pass")
    pid, start = record(popen)
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process_start_time(pid) == start
    assert not is_same_process(pid, start)
    popen.wait()
    assert process_start_time(pid) is None
    assert not is_same_process(pid, start)


def test_stop_orphans_with_no_records() -> None:
    assert stop_orphans([], signal.SIGTERM, 1.0) == []


def test_stops_a_process_gracefully(procs: Procs) -> None:
    popen = procs.start("import time; time.sleep(60)")
    began = time.monotonic()
    assert stop_orphans([record(popen)], signal.SIGTERM, 10.0) == [popen.pid]
    assert time.monotonic() - began < 5.0
    assert popen.wait(timeout=5) == -signal.SIGTERM


def test_wrong_start_time_is_left_alone(procs: Procs) -> None:
    popen = procs.start("import time; time.sleep(60)")
    pid, start = record(popen)
    assert not is_same_process(pid, start - 2.0)
    assert stop_orphans([(pid, start - 2.0)], signal.SIGKILL, 0.2) == []
    time.sleep(0.1)
    assert popen.poll() is None
    assert running(pid)


def test_process_ignoring_signals_is_killed_after_timeout(procs: Procs) -> None:
    popen = procs.start_ready(IGNORE_STOP_SIGNALS)
    began = time.monotonic()
    assert stop_orphans([record(popen)], signal.SIGTERM, 0.5) == [popen.pid]
    elapsed = time.monotonic() - began
    assert 0.5 <= elapsed < 5.0
    assert popen.wait(timeout=5) == -signal.SIGKILL


def test_timeout_is_shared_by_all_orphans(procs: Procs) -> None:
    popens = [procs.start_ready(IGNORE_STOP_SIGNALS) for _ in range(3)]
    began = time.monotonic()
    stopped = stop_orphans([record(p) for p in popens], signal.SIGINT, 0.5)
    assert sorted(stopped) == sorted(p.pid for p in popens)
    assert time.monotonic() - began < 0.5 + 3.0
    assert [p.wait(timeout=5) for p in popens] == [-signal.SIGKILL] * 3


def test_group_leader_and_grandchild_are_both_stopped(procs: Procs) -> None:
    leader = procs.start(LEADER_WITH_GRANDCHILD)
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    grandchild_start = procs.track(grandchild)
    assert os.getpgid(grandchild) == leader.pid
    began = time.monotonic()
    # The leader obeys SIGTERM at once; the grandchild ignores it until the SIGKILL.
    assert stop_orphans([record(leader)], signal.SIGTERM, 0.5) == [leader.pid]
    assert time.monotonic() - began >= 0.5
    assert leader.wait(timeout=5) == -signal.SIGTERM
    assert not is_same_process(grandchild, grandchild_start)
    assert not running(grandchild)


def test_process_that_is_not_a_group_leader_is_signalled_alone(procs: Procs) -> None:
    # Same process group as the test runner: a group signal would hit pytest itself.
    popen = procs.start("import time; time.sleep(60)", new_session=False)
    assert os.getpgid(popen.pid) != popen.pid
    assert stop_orphans([record(popen)], signal.SIGTERM, 5.0) == [popen.pid]
    assert popen.wait(timeout=5) == -signal.SIGTERM


def test_mixed_records(procs: Procs) -> None:
    alive = procs.start("import time; time.sleep(60)")
    other = procs.start("import time; time.sleep(60)")
    other_pid, other_start = record(other)
    gone = procs.start("pass")
    gone_record = record(gone)
    gone.wait()
    records = [record(alive), (other_pid, other_start + 3.0), gone_record, record(alive)]
    assert stop_orphans(records, signal.SIGTERM, 5.0) == [alive.pid]
    assert alive.wait(timeout=5) == -signal.SIGTERM
    assert other.poll() is None
