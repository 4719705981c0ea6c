"""The daemon side of the sd_notify protocol (SPEC 1.6, 1.9): one datagram socket per instance.

Each launch gets its own `NotifySocket`, an AF_UNIX datagram socket bound to an abstract
address (`\\0corral/<daemon pid>/<16 random hex chars>`; no file, so no path-length
limit and no permissions to arrange when the app runs as another user). The child finds
it in `$NOTIFY_SOCKET` as `@corral/...` (systemd's spelling of an abstract address) and
sends datagrams of `KEY=VALUE` lines: `READY=1`, `STATUS=...`, `WATCHDOG=1`, ...

Abstract sockets can be reached by any local process (in the same network namespace), so
every datagram carries the sender's kernel-verified credentials (`SO_PASSCRED`) and is
handed on only if `sender_allowed(pid, uid)` says so; the supervisor accepts the
instance's own process group. This module only receives and parses: what a key means is
the caller's business (`corral.core.channels`). The wire format is in docs/NOTIFY.md.

Memory stays bounded: the kernel queues a handful of datagrams per socket (senders block
beyond that), and the daemon reads them one at a time and parses each before the next.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("corral.notify")

MAX_DATAGRAM = 64 * 1024
"""Bigger datagrams are truncated by the kernel on receipt; they are dropped and counted."""
MAX_PER_WAKEUP = 32
"""Datagrams read per readiness callback: a flood cannot hold the event loop; the rest
are read on the next turn of the loop."""
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid, uid_t uid, gid_t gid
_SCM_MAX_FD = 253  # the kernel's limit on fds in one SCM_RIGHTS message
_ANCILLARY_SIZE = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(
    _SCM_MAX_FD * array.array("i").itemsize
)
"""Room for the credentials and for any fds a sender attaches (systemd-notify's barrier
sends one), so that they are received and closed rather than left to chance."""
_BIND_ATTEMPTS = 8


@dataclass(frozen=True)
class NotifyMessage:
    """One datagram: who sent it (kernel-verified) and its `KEY=VALUE` assignments."""

    pid: int
    uid: int
    fields: dict[str, str]


def parse_payload(data: bytes) -> dict[str, str]:
    """The assignments of an sd_notify datagram: `KEY=VALUE` lines separated by newlines.

    The value is everything after the first `=`. Lines without `=` or with an empty key
    are ignored; a key given twice keeps its last value; invalid UTF-8 is replaced."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """A notify socket for one instance, read on `loop`; see the module docstring.

    `on_message` is called on the loop for each accepted datagram that has at least one
    assignment; `sender_allowed(pid, uid)` decides which senders are accepted."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[NotifyMessage], None],
        sender_allowed: Callable[[int, int], bool],
    ) -> None:
        self._loop = loop
        self._on_message = on_message
        self._sender_allowed = sender_allowed
        self.refused = 0
        """Datagrams dropped because their sender is not one of the instance's processes."""
        self.oversized = 0
        """Datagrams dropped because they were longer than MAX_DATAGRAM."""
        self.received = 0
        """Datagrams accepted and handed to `on_message`."""
        self._closed = False
        self._sock, self._name = _bind_abstract()
        try:
            loop.add_reader(self._sock.fileno(), self._on_readable)
        except BaseException:
            self._sock.close()
            raise

    @property
    def address(self) -> str:
        """The child's `NOTIFY_SOCKET` value: `@corral/...` (`@` stands for the abstract
        namespace's leading NUL byte, as with systemd)."""
        return "@" + self._name[1:]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop reading and close the socket; datagrams still queued are discarded."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # the loop may already be closed
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<NotifySocket {self.address} {state}>"

    def _on_readable(self) -> None:
        for _ in range(MAX_PER_WAKEUP):
            if self._closed:  # on_message may close the socket
                return
            try:
                data, ancdata, flags, _addr = self._sock.recvmsg(
                    MAX_DATAGRAM, _ANCILLARY_SIZE, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket %s: receive failed: %s", self.address, exc)
                return
            self._handle(data, ancdata, flags)

    def _handle(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        creds, fds = _parse_ancillary(ancdata)
        try:
            self._dispatch(data, creds, flags)
        finally:
            # Only now: closing them is what tells systemd-notify's barrier that its
            # messages were processed, and it exits then (before, it is still alive
            # and in its process group for the sender check).
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _dispatch(self, data: bytes, creds: tuple[int, int, int] | None, flags: int) -> None:
        if creds is None or not self._allowed(creds[0], creds[1]):
            self.refused += 1
            if _worth_logging(self.refused):
                log.warning(
                    "notify socket %s: refused a message from pid %s uid %s (%d refused)",
                    self.address,
                    creds[0] if creds else "?",
                    creds[1] if creds else "?",
                    self.refused,
                )
            return
        pid, uid, _gid = creds
        if flags & socket.MSG_TRUNC:
            self.oversized += 1
            if _worth_logging(self.oversized):
                log.warning(
                    "notify socket %s: dropped a message over %d bytes from pid %d (%d dropped)",
                    self.address,
                    MAX_DATAGRAM,
                    pid,
                    self.oversized,
                )
            return
        fields = parse_payload(data)
        if not fields:
            return
        self.received += 1
        try:
            self._on_message(NotifyMessage(pid=pid, uid=uid, fields=fields))
        except Exception:
            log.exception("notify socket %s: message handler failed", self.address)

    def _allowed(self, pid: int, uid: int) -> bool:
        if pid <= 0:  # 0: the sender lives in a pid namespace the daemon cannot see
            return False
        try:
            return self._sender_allowed(pid, uid)
        except Exception:
            log.exception("notify socket %s: sender check failed", self.address)
            return False


def _worth_logging(count: int) -> bool:
    """Log the first of a kind, then every 1000th: a flood cannot fill the daemon's log."""
    return count == 1 or count % 1000 == 0


def _bind_abstract() -> tuple[socket.socket, str]:
    """A non-blocking, close-on-exec datagram socket with SO_PASSCRED, bound to a fresh
    abstract name."""
    last_error: OSError | None = None
    for _ in range(_BIND_ATTEMPTS):
        name = f"\0corral/{os.getpid()}/{secrets.token_hex(8)}"
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(name)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.setblocking(False)
        return sock, name
    assert last_error is not None
    raise last_error


def _parse_ancillary(
    ancdata: list[tuple[int, int, bytes]],
) -> tuple[tuple[int, int, int] | None, list[int]]:
    """(pid, uid, gid) from SCM_CREDENTIALS, and the fds that came along (to be closed)."""
    creds: tuple[int, int, int] | None = None
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            pid, uid, gid = _UCRED.unpack_from(payload)
            creds = (pid, uid, gid)
        elif kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return creds, fds
