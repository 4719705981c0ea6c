"""corral.client, the stdlib-only helper for apps: notify, listening sockets, watchdog."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import client

REPO = Path(__file__).resolve().parent.parent
NOTIFY_FUNCTIONS = [
    lambda: client.notify(READY=1),
    lambda: client.notify_raw("READY=1\n"),
    lambda: client.ready(),
    lambda: client.ready("up"),
    lambda: client.status("busy"),
    lambda: client.stopping(),
    lambda: client.watchdog(),
    lambda: client.metric("requests", 1, "counter"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ):
        monkeypatch.delenv(var, raising=False)
    # Each test reads the LISTEN_* variables afresh.
    monkeypatch.setattr(client, "_listen_passed", None)
    monkeypatch.setattr(client, "_listen_sockets", {})


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket on an abstract address, set as this process's NOTIFY_SOCKET."""
    name = f"corral-test/{os.getpid()}/{os.urandom(8).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(70000).decode()


# ---------------------------------------------------------------------- notify


@pytest.mark.parametrize("send", NOTIFY_FUNCTIONS)
def test_without_notify_socket_sending_returns_false(send: object) -> None:
    assert callable(send)
    assert send() is False


@pytest.mark.parametrize("address", ["", "relative/path", "@corral/nobody-listens", "/nonexistent"])
def test_an_unusable_notify_socket_returns_false(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert client.ready() is False


def test_notify_sends_key_value_lines(receiver: socket.socket) -> None:
    assert client.notify(READY=1, status="line one\nline two", flag=True, off=False) is True
    assert received(receiver) == "READY=1\nSTATUS=line one line two\nFLAG=1\nOFF=0\n"


def test_shortcuts(receiver: socket.socket) -> None:
    assert client.ready()
    assert received(receiver) == "READY=1\n"
    assert client.ready(status="serving")
    assert received(receiver) == "READY=1\nSTATUS=serving\n"
    assert client.status("half way")
    assert received(receiver) == "STATUS=half way\n"
    assert client.stopping()
    assert received(receiver) == "STOPPING=1\n"
    assert client.watchdog()
    assert received(receiver) == "WATCHDOG=1\n"
    assert client.notify_raw("MAINPID=42\nERRNO=2")
    assert received(receiver) == "MAINPID=42\nERRNO=2"


def test_notify_to_a_socket_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert client.ready()
        assert received(sock) == "READY=1\n"


@pytest.mark.parametrize("key", ["", "A=B", "A B", "A\nB", "Ä"])
def test_invalid_keys_are_a_programming_error(key: str) -> None:
    with pytest.raises(ValueError):
        client.notify(**{key: "1"})
    with pytest.raises(ValueError):
        client.notify()


def test_metric(receiver: socket.socket) -> None:
    assert client.metric("queue_depth", 12)
    assert received(receiver) == "CORRAL_METRIC=gauge:queue_depth=12\n"
    assert client.metric("http_requests", 1.5, kind="counter")
    assert received(receiver) == "CORRAL_METRIC=counter:http_requests=1.5\n"


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("x", 1, "summary"),
        ("", 1, "gauge"),
        ("a=b", 1, "gauge"),
        ("a b", 1, "gauge"),
        ("x" * 201, 1, "gauge"),
        ("x", float("nan"), "gauge"),
        ("x", float("inf"), "gauge"),
        ("x", True, "gauge"),
        ("x", "1", "gauge"),
    ],
)
def test_invalid_metrics(name: str, value: float, kind: str) -> None:
    with pytest.raises(ValueError):
        client.metric(name, value, kind)


# ---------------------------------------------------------------------- watchdog


@pytest.mark.parametrize(
    ("usec", "watchdog_pid", "expected"),
    [
        (None, None, None),
        ("2500000", None, 2.5),
        ("30000000", "self", 30.0),
        ("2500000", "other", None),
        ("2500000", "garbage", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    watchdog_pid: str | None,
    expected: float | None,
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if watchdog_pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif watchdog_pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif watchdog_pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", watchdog_pid)
    assert client.watchdog_interval() == expected


# ---------------------------------------------------------------------- listening sockets


def test_no_listen_fds() -> None:
    assert client.listen_sockets() == []
    assert client.listen_fds() == []
    assert client.listen_socket_names() == []


def test_listen_pid_mismatch_returns_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # meant for another process
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert client.listen_sockets() == []
    assert client.listen_socket_names() == []
    assert client.listen_fds(unset_environment=True) == []
    for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        assert var not in os.environ


@pytest.mark.parametrize("count", ["0", "-1", "two", ""])
def test_bad_listen_fds_returns_nothing(monkeypatch: pytest.MonkeyPatch, count: str) -> None:
    monkeypatch.setenv("LISTEN_FDS", count)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert client.listen_fds() == []


def test_names_are_padded_with_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "3")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDNAMES", "web:admin:extra:ignored")
    assert client.listen_socket_names() == ["web", "admin", "extra"]
    monkeypatch.setattr(client, "_listen_passed", None)
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert client.listen_socket_names() == ["web", "unknown", "unknown"]
    monkeypatch.setattr(client, "_listen_passed", None)
    monkeypatch.delenv("LISTEN_FDNAMES")
    assert client.listen_socket_names() == ["unknown"] * 3


# The launcher does what the daemon does between fork and exec: the inherited sockets
# go to fds 3.., and LISTEN_PID is the pid of the process that will run the app.
LAUNCHER = """
import os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
for target, fd in enumerate(fds, start=3):
    os.dup2(fd, target)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "web:admin"
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
"""

APP = """
import json, os, socket, sys
from corral import client
socks = client.listen_sockets(unset_environment=True)
report = {
    "same_objects": all(a is b for a, b in zip(socks, client.listen_sockets())),
    "names": client.listen_socket_names(),
    "fds": [s.fileno() for s in socks],
    "families": [s.family.name for s in socks],
    "types": [s.type.name for s in socks],
    "addresses": [s.getsockname() for s in socks],
    "inheritable": [os.get_inheritable(s.fileno()) for s in socks],
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}
print(json.dumps(report), flush=True)
for sock in socks:
    conn, _ = sock.accept()
    conn.sendall(b"hello from " + sock.family.name.encode())
    conn.close()
"""


def test_listen_sockets_in_a_child_that_inherits_them(tmp_path: Path) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_path = str(tmp_path / "admin.sock")
    unix.bind(unix_path)
    unix.listen()
    port = tcp.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    fds = (tcp.fileno(), unix.fileno())
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), APP],
        pass_fds=fds,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # The child has its own copies now: serving works even with the parent's closed.
        tcp.close()
        unix.close()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        report = json.loads(line)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(100) == b"hello from AF_INET"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(unix_path)
            assert conn.recv(100) == b"hello from AF_UNIX"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert report == {
        "same_objects": True,
        "names": ["web", "admin"],
        "fds": [3, 4],
        "families": ["AF_INET", "AF_UNIX"],
        "types": ["SOCK_STREAM", "SOCK_STREAM"],
        "addresses": [["127.0.0.1", port], unix_path],
        "inheritable": [False, False],
        "env_left": [],
    }


def test_a_forked_child_does_not_claim_the_parents_sockets(tmp_path: Path) -> None:
    """LISTEN_PID names the process the sockets were meant for, not its children."""
    code = (
        "import os, sys\n"
        "from corral import client\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
        "assert client.listen_fds() == [3]\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if client.listen_fds() == [] else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=30).returncode == 0


# ---------------------------------------------------------------------- stdlib only


def test_client_imports_only_the_standard_library() -> None:
    # Python 3.8 grammar too: apps may run on an older interpreter than corral.
    tree = ast.parse((REPO / "corral" / "client.py").read_text(), feature_version=(3, 8))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            assert node.module is not None
            modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_client_works_as_a_copied_file_without_corral(tmp_path: Path) -> None:
    copy = tmp_path / "corral_client.py"
    copy.write_text((REPO / "corral" / "client.py").read_text())
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import corral_client;"
        " sys.exit(0 if corral_client.ready() is False else 1)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],  # no site-packages, no corral
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
