"""Killing every process of a uid without ever signalling a reused pid.

A pid is signalled only through a pidfd, and only after its uid was read again once the
pidfd was open: if the process that had the pid is gone by then, the pidfd refers to the
dead one and the signal goes nowhere.
"""

from __future__ import annotations

import os
import signal
import time

_ROUNDS = 200
_PAUSE = 0.02


def uids_of(pid: int) -> tuple[int, ...] | None:
    """Real, effective, saved and filesystem uid of `pid`; None if it is gone or already
    dead (a zombie waiting for its parent: a signal cannot do more to it)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"State:") and line.split()[1:2] in ([b"Z"], [b"X"]):
                    return None
                if line.startswith(b"Uid:"):
                    return tuple(int(field) for field in line.split()[1:5])
    except (OSError, ValueError):
        return None
    return None


def _runs_as(pid: int, uid: int) -> bool:
    """True if the process has `uid` as its real, effective or saved uid (a tenant's
    setuid file run by someone else counts: it acts with the tenant's rights)."""
    uids = uids_of(pid)
    return uids is not None and uid in uids[:3]


def pids_of(uid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _runs_as(int(e), uid)]


def open_checked(pid: int, uid: int) -> int | None:
    """A pidfd for `pid` if it is (still) a process of `uid`, else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if _runs_as(pid, uid):
        return fd
    os.close(fd)
    return None


def kill_uid(uid: int) -> int:
    """SIGKILL every process of `uid` until none is left; how many were signalled.

    Raises OSError if they keep coming back (a process forking faster than it is killed
    for _ROUNDS rounds). Never for uid 0.
    """
    if uid == 0:
        raise ValueError("refusing to kill root's processes")
    if uid == os.getuid():
        raise ValueError("refusing to kill the helper's own processes")
    total = 0
    for _ in range(_ROUNDS):
        signalled = 0
        for pid in pids_of(uid):
            fd = open_checked(pid, uid)
            if fd is None:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                signalled += 1
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
        if not signalled:
            return total
        total += signalled
        time.sleep(_PAUSE)  # let the kernel finish them before looking again
    raise OSError(f"processes of uid {uid} keep appearing after {_ROUNDS} rounds of SIGKILL")
