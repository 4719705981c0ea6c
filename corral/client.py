"""A tiny helper for apps run by corral: readiness, status, watchdog, sockets, metrics.

Standard library only, and nothing from the rest of corral: copy this one file into an
app if corral is not installed where the app runs. It speaks the systemd conventions, so
it works under systemd too.

    from corral import client

    socks = client.listen_sockets()  # the sockets corral bound for the app (`listen:`)
    ...
    client.ready(status="serving on fd 3")  # with `wait_ready: true`
    client.watchdog()                       # at least every watchdog_interval() / 2

Sending never raises: without `$NOTIFY_SOCKET` (not run by corral, or by an old
version) or when sending fails, the functions return False. The wire format, for other
languages, is in docs/NOTIFY.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import threading

__all__ = [
    "SEND_TIMEOUT",
    "listen_fds",
    "listen_socket_names",
    "listen_sockets",
    "metric",
    "notify",
    "notify_raw",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

SEND_TIMEOUT = 1.0
"""Seconds a send may wait when the daemon's queue for this socket is full; after that
the message is given up (False) rather than holding up the app."""
LISTEN_FDS_START = 3

_KEY = re.compile(r"[A-Za-z0-9_]+\Z")
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # a Prometheus-safe name
_METRIC_KINDS = ("gauge", "counter", "meter", "histogram")
_listen_lock = threading.Lock()
_listen_passed: tuple[int, list[int], list[str]] | None = None  # (pid, fds, names)
_listen_sockets: dict[int, socket.socket] = {}


# ---------------------------------------------------------------------- notify socket


def notify_raw(text: str, timeout: float | None = SEND_TIMEOUT) -> bool:
    """Send `text` (`KEY=VALUE` lines) as one datagram to `$NOTIFY_SOCKET`.

    The address is a path, or an abstract name written with a leading `@`. Returns True
    once sent, False when there is no NOTIFY_SOCKET or sending failed (never raises)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not (address.startswith("@") or address.startswith("/")):
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.settimeout(timeout)
        sock.sendto(text.encode("utf-8", errors="replace"), target)
    except (OSError, ValueError):
        return False
    finally:
        sock.close()
    return True


def notify(**fields: object) -> bool:
    """Send `KEY=VALUE` assignments in one datagram, e.g. `notify(READY=1, STATUS="up")`.

    Keys are upper-cased (`notify(status="x")` sends `STATUS=x`) and must be letters,
    digits and `_` (ValueError otherwise: a programming error, raised even when there is
    no NOTIFY_SOCKET). Values are str()-ed, True/False become 1/0, and line breaks in a
    value become spaces (the format has no escaping). Returns what notify_raw returns."""
    if not fields:
        raise ValueError("notify() needs at least one KEY=VALUE")
    lines = []
    for key, value in fields.items():
        if not _KEY.match(key):
            raise ValueError(f"invalid notify key {key!r}")
        lines.append(f"{key.upper()}={_text(value)}")
    return notify_raw("\n".join(lines) + "\n")


def ready(status: str | None = None) -> bool:
    """`READY=1` (and `STATUS=`): the app is up; with `wait_ready`, corral considers the
    start or reload of this instance done."""
    if status is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status)


def status(text: str) -> bool:
    """`STATUS=text`: a one-line status that `corral describe` shows."""
    return notify(STATUS=text)


def stopping() -> bool:
    """`STOPPING=1`: the app is shutting down on its own."""
    return notify(STOPPING=1)


def watchdog() -> bool:
    """`WATCHDOG=1`: the app is alive; send it at least every watchdog_interval() / 2."""
    return notify(WATCHDOG=1)


def watchdog_interval() -> float | None:
    """Seconds within which corral expects `WATCHDOG=1`, from `$WATCHDOG_USEC`; None when
    no watchdog is configured, or when `$WATCHDOG_PID` names another process."""
    watchdog_pid = os.environ.get("WATCHDOG_PID")
    if watchdog_pid is not None and _int(watchdog_pid) != os.getpid():
        return None
    usec = _int(os.environ.get("WATCHDOG_USEC", ""))
    if usec is None or usec <= 0:
        return None
    return usec / 1_000_000


def metric(name: str, value: float, kind: str = "gauge") -> bool:
    """Push an app metric, sent as `CORRAL_METRIC=<kind>:<name>=<value>` (docs/NOTIFY.md).

    `kind` is gauge (a level), counter (an increment), meter (events, shown as a rate) or
    histogram (an observation); `name` is a letter or `_` then up to 63 letters, digits
    or `_` (it becomes part of a Prometheus name); `value` a finite number (not negative
    for counters and meters). ValueError otherwise."""
    if kind not in _METRIC_KINDS:
        raise ValueError(f"metric kind must be one of {', '.join(_METRIC_KINDS)}, not {kind!r}")
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"metric value must be a finite number, not {value!r}")
    return notify_raw(f"CORRAL_METRIC={kind}:{name}={value!r}\n")


# ---------------------------------------------------------------------- listening sockets


def listen_fds(unset_environment: bool = False) -> list[int]:
    """The fds passed with the socket-activation convention: `$LISTEN_FDS` fds from 3,
    only if `$LISTEN_PID` is this process (else []). They are made close-on-exec.

    With `unset_environment`, LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES are removed from
    os.environ (so that child processes do not see them), as sd_listen_fds(1) does; this
    process remembers them, so later calls here still answer."""
    return list(_passed(unset_environment)[0])


def listen_socket_names(unset_environment: bool = False) -> list[str]:
    """The names of the passed sockets (`$LISTEN_FDNAMES`, colon separated), one per fd;
    "unknown" where none was given (as systemd does). [] when no sockets were passed."""
    return list(_passed(unset_environment)[1])


def listen_sockets(unset_environment: bool = False) -> list[socket.socket]:
    """The listening sockets corral bound for the app (`listen:` in its config), as socket
    objects (family and type come from the kernel), in the order of listen_socket_names().

    [] when none were passed to this process. Repeated calls return the same objects (one
    fd must not have two owners). OSError if a passed fd is not an open socket."""
    fds = _passed(unset_environment)[0]
    with _listen_lock:
        socks = []
        for fd in fds:
            sock = _listen_sockets.get(fd)
            if sock is None or sock.fileno() != fd:  # closed by the app: wrap it again
                sock = socket.socket(fileno=fd)
                _listen_sockets[fd] = sock
            socks.append(sock)
        return socks


def _passed(unset_environment: bool) -> tuple[list[int], list[str]]:
    """(fds, names) passed to this process, read from the environment once per process."""
    global _listen_passed
    with _listen_lock:
        pid = os.getpid()
        if _listen_passed is None or _listen_passed[0] != pid:
            # A forked child re-reads: LISTEN_PID names its parent, so it gets [].
            _listen_passed = (pid, *_read_listen_environment(pid))
        if unset_environment:
            for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                os.environ.pop(var, None)
        return _listen_passed[1], _listen_passed[2]


def _read_listen_environment(pid: int) -> tuple[list[int], list[str]]:
    count = _int(os.environ.get("LISTEN_FDS", ""))
    if count is None or count <= 0 or _int(os.environ.get("LISTEN_PID", "")) != pid:
        return [], []
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + count))
    for fd in fds:
        with contextlib.suppress(OSError):  # not open: listen_sockets() reports it
            os.set_inheritable(fd, False)
    given = os.environ.get("LISTEN_FDNAMES")
    names = given.split(":")[:count] if given else []
    names.extend(["unknown"] * (count - len(names)))
    return fds, names


# ---------------------------------------------------------------------- helpers


def _int(text: str) -> int | None:
    try:
        return int(text.strip(), 10)
    except ValueError:
        return None


def _text(value: object) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
