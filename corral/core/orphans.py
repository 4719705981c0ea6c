"""Stopping the instances left running by a daemon that died without stopping them.

A daemon that is SIGKILLed (or crashes) leaves its apps running, reparented to init. The
next daemon finds their records in the state file, `{"pid": ..., "start_time": ...}`, and
stops them before it starts anything, so that no app ever runs twice. A pid alone proves
nothing (pids are reused), so a process is only touched when its kernel start time
matches the record too, and every signal after that check goes through a pidfd or to a
process group whose leader is known to be alive.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

START_TIME_TOLERANCE = 0.01
"""Below one clock tick (10 ms), the resolution of kernel start times: the same process
always reads back the same value, and two processes never match."""

KILL_WAIT = 5.0
"""How long to wait for SIGKILLed processes to be gone (the kernel only needs a moment)."""


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_start_time(pid: int) -> float | None:
    """When `pid` started, in seconds since boot, or None if there is no such pid.

    Read from /proc/<pid>/stat (field 22) rather than as wall-clock time: a wall-clock
    start time is derived from the boot time, which moves when the clock is stepped (NTP
    after boot), and then the same process would no longer be recognised. A zombie
    still has its start time; use `is_same_process` to ask whether it runs.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    return int(fields[19]) / _CLOCK_TICKS


def is_same_process(pid: int, start_time: float) -> bool:
    """True if `pid` is still the process that started at `start_time`, and not a zombie."""
    current = process_start_time(pid)
    if current is None or abs(current - start_time) >= START_TIME_TOLERANCE:
        return False
    import psutil  # on use: the daemon's start-up does not need it (see sampler.host_sample)

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class _Orphan:
    pid: int
    pidfd: int
    leads_group: bool
    """Still the leader of its own process group: signal the whole group."""

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.leads_group:
                os.killpg(self.pid, signum)
            else:
                signal.pidfd_send_signal(self.pidfd, signum)


def stop_orphans(records: Iterable[tuple[int, float]], signum: int, timeout: float) -> list[int]:
    """Stop the recorded processes that still run: `signum`, then SIGKILL after `timeout`.

    Blocking. Each record is `(pid, start_time)`; records that no longer match a running
    process are skipped. Returns the pids that were stopped.
    """
    orphans: list[_Orphan] = []
    try:
        for pid, start_time in dict(records).items():
            orphan = _adopt(pid, start_time)
            if orphan is not None:
                orphans.append(orphan)
        for orphan in orphans:
            orphan.signal(signum)
        _finish(orphans, time.monotonic() + timeout)
    finally:
        for orphan in orphans:
            os.close(orphan.pidfd)
    return [o.pid for o in orphans]


def _adopt(pid: int, start_time: float) -> _Orphan | None:
    """Pin the recorded process with a pidfd, if it is still that process."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    # Checked after opening: the pidfd now refers to the process that passed the check,
    # even if it exits and its pid is reused right after.
    if not is_same_process(pid, start_time):
        os.close(pidfd)
        return None
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        leads_group = False
    return _Orphan(pid, pidfd, leads_group)


def _finish(orphans: list[_Orphan], deadline: float) -> None:
    """Wait for the orphans and their groups until `deadline`, then SIGKILL what is left."""
    alive = _wait_gone([o.pidfd for o in orphans], deadline)
    groups = [o.pid for o in orphans if o.leads_group]
    # The rest of each tree got the signal too: give it what is left of the grace period.
    members: list[int] = []
    try:
        _open_pidfds(_group_members(groups), into=members)
        alive |= _wait_gone(members, deadline)
        for orphan in orphans:
            if orphan.pidfd in alive and not orphan.leads_group:
                orphan.signal(signal.SIGKILL)
        # Unconditionally: a member may have forked after the scan.
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        _wait_gone(alive, time.monotonic() + KILL_WAIT)
    finally:
        for fd in members:
            os.close(fd)


def _wait_gone(pidfds: Iterable[int], deadline: float) -> set[int]:
    """Wait until every pidfd reports its process exited, or `deadline`; return the rest.

    A pidfd becomes readable when its process exits, zombie or not: no polling of /proc
    and no need to be the parent.
    """
    alive = set(pidfds)
    poller = select.poll()
    for fd in alive:
        poller.register(fd, select.POLLIN)
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _events in poller.poll(math.ceil(remaining * 1000)):
            poller.unregister(fd)
            alive.discard(fd)
    return alive


def _group_members(pgids: list[int]) -> list[int]:
    """The pids still in any of these process groups (a one-time scan, once leaders died)."""
    if not pgids:
        return []
    import psutil

    wanted = set(pgids)
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) in wanted:
                members.append(pid)
    return members


def _open_pidfds(pids: list[int], *, into: list[int]) -> None:
    # Appends as it goes, so that the caller closes every fd even if one open fails.
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            into.append(os.pidfd_open(pid))
