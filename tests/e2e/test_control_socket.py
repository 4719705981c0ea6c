"""The control socket: 0600, peer uid checked, garbage answered and survived (SPEC 1.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from ..conftest import Corral, system_python

CONNECT_AS_OTHER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.__class__.__name__})); sys.exit(0)
s.sendall(b'{"id": 1, "cmd": "list", "args": {}}\\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"reply": data.decode()}))
"""

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")


def as_nobody(path: str) -> dict[str, str]:
    out = subprocess.run(
        [system_python(), "-c", CONNECT_AS_OTHER, path],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.mark.slow
@root_only
def test_another_uid_cannot_even_reach_the_socket(daemon: Corral) -> None:
    assert as_nobody(str(daemon.home.socket)) == {"connect_error": "PermissionError"}


@pytest.mark.slow
@root_only
def test_peer_uid_check_refuses_another_uid_even_if_the_file_is_opened_up(daemon: Corral) -> None:
    # Simulate a careless chmod: the file mode is no longer the only guard.
    os.chmod(daemon.home.root.parent, 0o755)
    os.chmod(daemon.home.root, 0o755)
    os.chmod(daemon.home.socket, 0o666)
    daemon.start_app("api", "import time; time.sleep(600)\n")
    result = as_nobody(str(daemon.home.socket))
    assert "reply" in result, result
    reply = json.loads(result["reply"])
    assert reply["ok"] is False and reply["error"]["message"] == "permission denied"
    assert "api" not in result["reply"]
    assert daemon.call("ping")["pid"] == daemon.daemon_pid()  # still serving its owner


def raw_exchange(corral: Corral, payload: bytes) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(corral.home.socket))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not json\n",
        b"[1, 2, 3]\n",
        b'{"cmd": 42}\n',
        b'{"id": 1, "cmd": "no-such-command"}\n',
        b'{"id": 1, "cmd": "stop", "args": {"target": 5}}\n',
        b'{"id": 1, "cmd": "start", "args": {"apps": [{"name": "x"}]}}\n',
        b'{"id": 1, "cmd": "start", "args": {"apps": "nope"}}\n',
        b'{"id": 1, "cmd": "send_signal", "args": {"target": "all", "signal": "SIGNOPE"}}\n',
        b"\xff\xfe\x00garbage\n",
    ],
)
def test_garbage_gets_an_error_reply_and_the_daemon_keeps_serving(
    daemon: Corral, garbage: bytes
) -> None:
    replies = raw_exchange(daemon, garbage)
    assert len(replies) == 1 and replies[0]["ok"] is False
    assert daemon.call("ping")["pid"] == daemon.daemon_pid()


@pytest.mark.slow
def test_an_oversized_message_is_refused_and_the_daemon_survives(daemon: Corral) -> None:
    received = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.home.socket))
        try:  # the daemon hangs up part-way through: that is the point
            sock.sendall(b"x" * (5 * 1024 * 1024) + b"\n")
            while chunk := sock.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    if received:
        assert json.loads(received.splitlines()[0])["ok"] is False
    assert daemon.call("ping")["pid"] == daemon.daemon_pid()
