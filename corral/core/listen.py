"""Listening sockets that the daemon binds for an app (SPEC 1.6, socket activation).

An app's `listen` entries are parsed with `parse_listen`, bound once by the daemon with
`bind_listeners` and handed to every instance as fds 3.. (`LISTEN_FDS`, `LISTEN_FDNAMES`,
`LISTEN_PID`, the systemd convention), so that a socket never closes while processes
come and go. `close_listeners` closes them and removes the unix socket files it created.

Accepted addresses:

- `host:port`: an IPv4 address or a host name (`localhost`), resolved with getaddrinfo
  (first result: a name may resolve to an IPv6 address);
- `[ipv6]:port`: `[::1]:8000`, `[::]:8000` (IPv6 only: IPV6_V6ONLY is set, so `[::]`
  does not also take the IPv4 port);
- `:port` or `*:port`: every IPv4 interface (`0.0.0.0`);
- `unix:/absolute/path`.

The sockets are blocking and non-inheritable in the daemon; the spawner makes them
inheritable in the child only (`corral.core.forkexec`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import weakref
from dataclasses import dataclass

_FORMS = "expected host:port, [ipv6]:port or unix:/path"
_UNIX_PATH_MAX = 107  # sizeof(sun_path) - 1 for the terminating NUL (Linux)
_NAME_MAX = 255
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_STALE_CHECK_TIMEOUT = 1.0

# Unix socket files created by `bind_listeners`: the socket -> (path, st_dev, st_ino), so
# that `close_listeners` only unlinks the file if it still is the socket we bound.
_created: weakref.WeakKeyDictionary[socket.socket, tuple[str, int, int]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class ListenAddress:
    """One parsed `listen` entry."""

    family: socket.AddressFamily
    host: str
    """The numeric address to bind (TCP); "" for a unix socket."""
    port: int
    """0 for a unix socket (and for an ephemeral TCP port, in tests)."""
    path: str | None
    """The socket file (unix); None for TCP."""
    name: str
    """For LISTEN_FDNAMES: only [A-Za-z0-9_.-], at most 255 characters."""
    scope_id: int = 0
    """IPv6 scope (interface index) of a link-local address such as `[fe80::1%eth0]`."""

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_listen(addr: str, *, allow_ephemeral: bool = False) -> ListenAddress:
    """Parse one `listen` entry; ValueError with a message meant for the user.

    Host names are resolved here (getaddrinfo). Port 0 (any free port) is only accepted
    with `allow_ephemeral` (tests): an app's configuration always names its port.
    """
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError(f"{_FORMS}, got {addr!r}")
    text = addr.strip()
    if text.startswith("unix:"):
        return _parse_unix(addr, text[len("unix:") :])
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"{_FORMS}, got {addr!r}")
        host_text = text[1:end]
        port = _parse_port(addr, text[end + 2 :], allow_ephemeral)
        return _ipv6(addr, host_text, port)
    host_text, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{_FORMS}, got {addr!r}")
    if ":" in host_text:
        raise ValueError(f"{_FORMS}, got {addr!r} (put an IPv6 address in brackets: [::1]:8000)")
    port = _parse_port(addr, port_text, allow_ephemeral)
    if host_text in ("", "*"):
        return ListenAddress(socket.AF_INET, "0.0.0.0", port, None, _name("tcp", "0.0.0.0", port))
    return _resolve(addr, host_text, port)


def _parse_port(addr: str, text: str, allow_ephemeral: bool) -> int:
    low = 0 if allow_ephemeral else 1
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ValueError(f"{_FORMS}, got {addr!r} (the port must be a number {low}..65535)")
    port = int(text)
    if not low <= port <= 65535:
        raise ValueError(f"port must be {low}..65535, got {port} in {addr!r}")
    return port


def _parse_unix(addr: str, path: str) -> ListenAddress:
    if not path.startswith("/"):
        raise ValueError(f"{_FORMS}, got {addr!r} (a unix socket path must be absolute)")
    if path.endswith("/") or "\0" in path:
        raise ValueError(f"{_FORMS}, got {addr!r} (not a valid socket file path)")
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ValueError(
            f"unix socket path too long ({len(os.fsencode(path))} bytes, "
            f"at most {_UNIX_PATH_MAX}): {path}"
        )
    base = os.path.basename(path)
    return ListenAddress(socket.AF_UNIX, "", 0, path, _name("unix", base))


def _ipv6(addr: str, host: str, port: int) -> ListenAddress:
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"{_FORMS}, got {addr!r} (not an IPv6 address: {host!r})") from exc
    sockaddr = infos[0][4]
    numeric = str(sockaddr[0])
    scope_id = int(sockaddr[3]) if len(sockaddr) >= 4 else 0
    return ListenAddress(socket.AF_INET6, numeric, port, None, _name("tcp6", host, port), scope_id)


def _resolve(addr: str, host: str, port: int) -> ListenAddress:
    try:
        infos = socket.getaddrinfo(
            host, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"cannot resolve host {host!r} in {addr!r}: {exc}") from exc
    family, _, _, _, sockaddr = next(
        (info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)),
        infos[0],
    )
    if family == socket.AF_INET6:
        scope_id = int(sockaddr[3]) if len(sockaddr) >= 4 else 0
        return ListenAddress(
            socket.AF_INET6, str(sockaddr[0]), port, None, _name("tcp6", host, port), scope_id
        )
    if family != socket.AF_INET:
        raise ValueError(f"cannot resolve host {host!r} in {addr!r} to an IP address")
    return ListenAddress(socket.AF_INET, str(sockaddr[0]), port, None, _name("tcp", host, port))


def _name(kind: str, what: str, port: int | None = None) -> str:
    raw = f"{kind}-{what}" if port is None else f"{kind}-{what}-{port}"
    return _NAME_BAD.sub("_", raw)[:_NAME_MAX]


# ---------------------------------------------------------------------------- binding


def bind_listeners(
    addrs: list[ListenAddress],
    *,
    backlog: int = 1024,
    unix_mode: int = 0o660,
    unix_owner: tuple[int, int] | None = None,
) -> list[socket.socket]:
    """Bind and listen on every address, all or nothing.

    TCP sockets get SO_REUSEADDR (and IPV6_V6ONLY for IPv6). A unix socket replaces a
    stale socket file (nobody answers), but not a live one nor a file that is not a
    socket; it is created so that nobody but us can connect before it gets `unix_mode`
    and, when given, `unix_owner` (uid, gid: for apps that run as another user).

    On any failure everything already bound is closed (and its file removed) and an
    OSError naming the address is raised.
    """
    socks: list[socket.socket] = []
    try:
        for addr in addrs:
            try:
                if addr.family == socket.AF_UNIX:
                    sock = _bind_unix(addr, backlog, unix_mode, unix_owner)
                else:
                    sock = _bind_tcp(addr, backlog)
            except OSError as exc:
                message = f"cannot listen on {addr}: {exc.strerror or exc}"
                if exc.errno is None:
                    raise OSError(message) from exc
                raise OSError(exc.errno, message) from exc
            socks.append(sock)
    except BaseException:
        close_listeners(socks, addrs[: len(socks)])
        raise
    return socks


def _bind_tcp(addr: ListenAddress, backlog: int) -> socket.socket:
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr.host, addr.port, 0, addr.scope_id))
        else:
            sock.bind((addr.host, addr.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(
    addr: ListenAddress, backlog: int, mode: int, owner: tuple[int, int] | None
) -> socket.socket:
    path = addr.path
    assert path is not None
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    created = False
    try:
        _bind_private(sock, path)
        created = True
        st = os.stat(path, follow_symlinks=False)
        _created[sock] = (path, st.st_dev, st.st_ino)
        if owner is not None:
            os.chown(path, owner[0], owner[1], follow_symlinks=False)
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        if created:
            _unlink_if_ours(sock)
        sock.close()
        raise
    return sock


def _bind_private(sock: socket.socket, path: str) -> None:
    """bind() so that the new socket file is not writable (connectable) by group or others.

    The file is born `0777 & ~umask`. With the usual umask (022, the daemon's) it already
    is; otherwise the umask is narrowed around the bind. The umask is per process, so that
    is avoided when possible: another thread forking at that instant would pass the
    narrow umask on to its child.
    """
    current = _current_umask()
    if current is not None and current & 0o022 == 0o022:
        sock.bind(path)
        return
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)


def _current_umask() -> int | None:
    """The umask without changing it (Linux 4.7+ reports it in /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _clear_stale(path: str) -> None:
    """Remove a stale socket file at `path`; refuse anything else that is there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(_STALE_CHECK_TIMEOUT)
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # stale: nobody listens there any more
    except FileNotFoundError:
        return  # removed meanwhile
    except (BlockingIOError, TimeoutError) as exc:
        raise OSError(errno.EADDRINUSE, f"{path} is in use (its backlog is full)") from exc
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            raise OSError(errno.EADDRINUSE, f"{path} is in use (by a datagram socket)") from exc
        raise OSError(
            exc.errno, f"cannot tell whether {path} is in use: {exc.strerror or exc}"
        ) from exc
    else:
        raise OSError(errno.EADDRINUSE, f"{path} is in use (something answers there)")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def close_listeners(socks: list[socket.socket], addrs: list[ListenAddress]) -> None:
    """Close the sockets; remove the unix socket files that `bind_listeners` created
    (only if the file at that path still is the very socket we bound)."""
    del addrs  # the files to remove are known from the sockets themselves
    for sock in socks:
        _unlink_if_ours(sock)
        sock.close()


def _unlink_if_ours(sock: socket.socket) -> None:
    entry = _created.pop(sock, None)
    if entry is None:
        return
    path, dev, ino = entry
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (dev, ino):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
