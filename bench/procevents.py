"""Process exec and exit times from the kernel (the netlink process connector).

The crash workload needs the moment a process exits and the moment its replacement execs,
for every manager alike, without instrumenting any of them. The kernel reports both to a
NETLINK_CONNECTOR socket subscribed to CN_IDX_PROC, with a CLOCK_MONOTONIC timestamp in
nanoseconds. Subscribing needs CAP_NET_ADMIN (root); `ProcEvents.open()` returns None
where that is not allowed, and the workload then says so instead of guessing.

Only the fork of a new process, exec, and the exit of a whole process (thread id ==
process id) are kept; a reader thread drains the socket into a list so that a burst of
events elsewhere on the machine does not overflow the socket's buffer while the workload
sleeps.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
SO_RCVBUFFORCE = 33

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_PIDS = struct.Struct("=ii")  # pid (thread), tgid (process)
_FORK = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid


@dataclass(frozen=True)
class Event:
    kind: str  # "fork" (a new process, not a thread), "exec" or "exit"
    pid: int
    ns: int
    """CLOCK_MONOTONIC nanoseconds (the kernel's ktime_get_ns)."""


class ProcEvents:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self.lost = False
        """The socket overflowed once (ENOBUFS): some events may be missing."""
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="procevents", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls) -> ProcEvents | None:
        """Subscribe, or None when the kernel or our privileges do not allow it."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError:
            return None
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 2**20)
            sock.bind((0, CN_IDX_PROC))
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            sock.settimeout(0.2)
        except OSError:
            sock.close()
            return None
        return cls(sock)

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: the kernel dropped events
                    self.lost = True
                    continue
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length = _NLMSG.unpack_from(data, offset)[0]
            if length < _NLMSG.size:
                return
            body = offset + _NLMSG.size + _CN_MSG.size
            if body + _EVENT.size + _PIDS.size <= offset + length:
                what, _cpu, ns = _EVENT.unpack_from(data, body)
                tid, tgid = _PIDS.unpack_from(data, body + _EVENT.size)
                if what == PROC_EVENT_FORK and body + _EVENT.size + _FORK.size <= offset + length:
                    _ppid, _ptgid, child, child_tgid = _FORK.unpack_from(data, body + _EVENT.size)
                    if child == child_tgid:
                        with self._lock:
                            self._events.append(Event("fork", child_tgid, ns))
                elif what == PROC_EVENT_EXEC:
                    with self._lock:
                        self._events.append(Event("exec", tgid, ns))
                elif what == PROC_EVENT_EXIT and tid == tgid:
                    with self._lock:
                        self._events.append(Event("exit", tgid, ns))
            offset += (length + 3) & ~3

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.send(_control(PROC_CN_MCAST_IGNORE))
        self._thread.join(timeout=2)
        self._sock.close()


def _control(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSG.pack(_NLMSG.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


def monotonic_ns_of_wall(wall: float, offset: float) -> int:
    """A time.time() value as CLOCK_MONOTONIC ns, given offset = time.time() - monotonic()."""
    return int((wall - offset) * 1e9)
