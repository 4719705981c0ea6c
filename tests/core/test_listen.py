"""Parsing `listen` addresses and binding them, with real sockets."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.core.listen import (
    ListenAddress,
    bind_listeners,
    close_listeners,
    parse_listen,
)

NAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


class Bound:
    """Everything bound by one test; closed (and unlinked) at teardown, pass or fail."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[socket.socket], list[ListenAddress]]] = []
        self.others: list[socket.socket] = []

    def bind(self, addrs: list[ListenAddress], **kwargs: object) -> list[socket.socket]:
        socks = bind_listeners(addrs, **kwargs)  # type: ignore[arg-type]
        self.groups.append((socks, addrs))
        return socks

    def raw(self, family: int = socket.AF_UNIX) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.others.append(sock)
        return sock

    def close(self) -> None:
        for socks, addrs in self.groups:
            close_listeners(socks, addrs)
        for sock in self.others:
            sock.close()


@pytest.fixture
def bound() -> Iterator[Bound]:
    b = Bound()
    try:
        yield b
    finally:
        b.close()


def ephemeral(text: str) -> ListenAddress:
    return parse_listen(text, allow_ephemeral=True)


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


# ------------------------------------------------------------------------------ parsing


def test_parse_ipv4() -> None:
    addr = parse_listen("127.0.0.1:8000")
    assert addr == ListenAddress(socket.AF_INET, "127.0.0.1", 8000, None, "tcp-127.0.0.1-8000")
    assert str(addr) == "127.0.0.1:8000"


def test_parse_hostname_is_resolved() -> None:
    addr = parse_listen("localhost:8080")
    assert addr.family in (socket.AF_INET, socket.AF_INET6)
    assert addr.host in ("127.0.0.1", "::1")
    assert addr.port == 8080
    assert addr.path is None
    assert addr.name == "tcp-localhost-8080"


@pytest.mark.parametrize(
    ("text", "host", "name"),
    [("[::1]:8000", "::1", "tcp6-__1-8000"), ("[::]:9000", "::", "tcp6-__-9000")],
)
def test_parse_ipv6(text: str, host: str, name: str) -> None:
    addr = parse_listen(text)
    assert addr.family == socket.AF_INET6
    assert addr.host == host
    assert addr.port == int(text.rsplit(":", 1)[1])
    assert addr.name == name
    assert NAME_OK.match(addr.name)
    assert str(addr) == text


@pytest.mark.parametrize("text", [":8000", "*:8000", " :8000 "])
def test_parse_all_ipv4_interfaces(text: str) -> None:
    addr = parse_listen(text)
    assert (addr.family, addr.host, addr.port) == (socket.AF_INET, "0.0.0.0", 8000)
    assert addr.name == "tcp-0.0.0.0-8000"


def test_parse_unix() -> None:
    addr = parse_listen("unix:/run/my app/web@1.sock")
    assert addr.family == socket.AF_UNIX
    assert addr.path == "/run/my app/web@1.sock"
    assert (addr.host, addr.port) == ("", 0)
    assert addr.name == "unix-web_1.sock"
    assert str(addr) == "unix:/run/my app/web@1.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected host:port, [ipv6]:port or unix:/path, got ''"),
        ("8000", "expected host:port, [ipv6]:port or unix:/path, got '8000'"),
        ("localhost", "expected host:port"),
        ("127.0.0.1:", "the port must be a number 1..65535"),
        ("127.0.0.1:http", "the port must be a number 1..65535"),
        ("127.0.0.1:-1", "the port must be a number"),
        ("127.0.0.1:+80", "the port must be a number"),
        ("127.0.0.1:0", "port must be 1..65535, got 0"),
        ("127.0.0.1:65536", "port must be 1..65535, got 65536"),
        ("::1:8000", "put an IPv6 address in brackets"),
        ("[::1]8000", "expected host:port"),
        ("[::1:8000", "expected host:port"),
        ("[localhost]:8000", "not an IPv6 address"),
        ("[127.0.0.1]:8000", "not an IPv6 address"),
        ("unix:relative.sock", "a unix socket path must be absolute"),
        ("unix:", "a unix socket path must be absolute"),
        ("unix:/run/dir/", "not a valid socket file path"),
        ("unix:/" + "a" * 120, "unix socket path too long"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(text)
    assert message in str(info.value)


def test_port_zero_only_when_allowed() -> None:
    assert ephemeral("127.0.0.1:0").port == 0
    assert ephemeral(":0").host == "0.0.0.0"
    with pytest.raises(ValueError, match=re.escape("port must be 0..65535, got 65536")):
        ephemeral("127.0.0.1:65536")


def test_names_are_valid_fd_names() -> None:
    for text in ["127.0.0.1:1", "[::1]:2", "*:3", "unix:/tmp/a b:c=d.sock", "unix:/x/\u00e9.sock"]:
        assert NAME_OK.match(parse_listen(text).name), text


# ------------------------------------------------------------------------------ binding


def test_bind_tcp(bound: Bound) -> None:
    (sock,) = bound.bind([ephemeral("127.0.0.1:0")])
    host, port = sock.getsockname()
    assert host == "127.0.0.1" and port > 0
    assert not sock.get_inheritable()
    assert sock.getblocking()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        conn, _ = sock.accept()
        conn.close()


@needs_ipv6
def test_bind_ipv6_is_v6_only(bound: Bound) -> None:
    (sock,) = bound.bind([ephemeral("[::1]:0")])
    assert sock.family == socket.AF_INET6
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert sock.getsockname()[0] == "::1"


@needs_ipv6
def test_bind_ipv6_any_leaves_ipv4_free(bound: Bound) -> None:
    (sock6,) = bound.bind([ephemeral("[::]:0")])
    port = sock6.getsockname()[1]
    (sock4,) = bound.bind([ephemeral(f"0.0.0.0:{port}")])  # would be EADDRINUSE without V6ONLY
    assert sock4.getsockname()[1] == port


def test_bind_unix_default_mode(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    (sock,) = bound.bind([parse_listen(f"unix:{path}")])
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert not sock.get_inheritable()
    assert sock.getsockname() == str(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))


@pytest.mark.parametrize("process_umask", [0o000, 0o022, 0o077])
def test_bind_unix_mode_does_not_depend_on_umask(
    bound: Bound, tmp_path: Path, process_umask: int
) -> None:
    path = tmp_path / "app.sock"
    old = os.umask(process_umask)
    try:
        bound.bind([parse_listen(f"unix:{path}")], unix_mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.umask(old) == old  # the umask is as it was


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a socket away")
def test_bind_unix_owner(bound: Bound, tmp_path: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    path = tmp_path / "app.sock"
    bound.bind([parse_listen(f"unix:{path}")], unix_owner=(nobody.pw_uid, nobody.pw_gid))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_stale_unix_socket_is_replaced(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    stale = bound.raw()
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens
    os.chmod(path, 0o700)
    (sock,) = bound.bind([parse_listen(f"unix:{path}")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # a new socket (inodes get reused)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        conn, _ = sock.accept()
        conn.close()


def test_live_unix_socket_is_refused(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    live = bound.raw()
    live.bind(str(path))
    live.listen(1)
    inode = os.stat(path).st_ino
    with pytest.raises(OSError, match=r"cannot listen on unix:.*app\.sock: .* is in use"):
        bound.bind([parse_listen(f"unix:{path}")])
    assert os.stat(path).st_ino == inode  # left alone


def test_non_socket_file_is_refused(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="exists and is not a socket"):
        bound.bind([parse_listen(f"unix:{path}")])
    assert path.read_text() == "precious"


def test_missing_directory_names_the_address(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "nope" / "app.sock"
    with pytest.raises(FileNotFoundError, match=re.escape(f"cannot listen on unix:{path}")):
        bound.bind([parse_listen(f"unix:{path}")])


def test_all_or_nothing(bound: Bound, tmp_path: Path) -> None:
    busy = bound.raw(socket.AF_INET)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    first = tmp_path / "first.sock"
    addrs = [
        parse_listen(f"unix:{first}"),
        ephemeral("127.0.0.1:0"),
        parse_listen(f"127.0.0.1:{port}"),
    ]
    before = _open_fds()
    with pytest.raises(OSError, match=re.escape(f"cannot listen on 127.0.0.1:{port}")) as info:
        bind_listeners(addrs)
    assert info.value.errno is not None
    assert not first.exists()  # the unix socket created before the failure is gone
    assert _open_fds() == before  # and every socket closed


def test_same_address_twice_fails_cleanly(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    addr = parse_listen(f"unix:{path}")
    with pytest.raises(OSError, match="is in use"):
        bind_listeners([addr, addr])
    assert not path.exists()


def test_close_removes_only_our_socket_file(bound: Bound, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    addrs = [parse_listen(f"unix:{path}"), ephemeral("127.0.0.1:0")]
    socks = bind_listeners(addrs)
    close_listeners(socks, addrs)
    assert not path.exists()
    assert all(sock.fileno() == -1 for sock in socks)

    socks = bind_listeners(addrs[:1])
    os.unlink(path)
    other = bound.raw()
    other.bind(str(path))  # someone else's socket now lives at that path
    close_listeners(socks, addrs[:1])
    assert stat.S_ISSOCK(os.stat(path).st_mode)  # not ours: left alone


def _open_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            os.fstat(int(name))
            fds.add(int(name))
    return fds
