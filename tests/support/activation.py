"""Start a program the way corral's cluster mode does, without a daemon: systemd socket
activation, with the listening sockets at fds 3.., LISTEN_FDS, LISTEN_FDNAMES, and
LISTEN_PID equal to the program's own pid.

LISTEN_PID can only be known after the fork, so a small Python shim runs in the child: it
moves the sockets to fds 3.., sets LISTEN_PID to its own pid and execs the program, which
keeps that pid. Used to check the test apps in tests/support/apps/ on their own.

    with loopback_listener() as sock:
        proc = spawn_activated([sys.executable, "fd_http.py"], [sock], cwd=APPS)
        ... http://127.0.0.1:{sock.getsockname()[1]}/ ...
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().parent / "apps"

# argv: shim N fd1 .. fdN prog args...   (runs in the child, then becomes `prog`)
_SHIM = """\
import fcntl, os, sys
n = int(sys.argv[1])
fds = [int(fd) for fd in sys.argv[2 : 2 + n]]
argv = sys.argv[2 + n :]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(n)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(argv[0], argv)
"""


@contextmanager
def loopback_listener(backlog: int = 128) -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 at a free port; closed on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()


def url_of(sock: socket.socket, path: str = "/") -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}{path}"


def spawn_activated(
    argv: Sequence[str],
    sockets: Sequence[socket.socket],
    *,
    names: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start `argv` with `sockets` at fds 3.. (systemd convention). `env` is added to this
    process's environment (LISTEN_* from it are dropped); `names` become LISTEN_FDNAMES
    (default "listen0:listen1:..."). Extra keyword arguments go to subprocess.Popen."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    child_env.update(env or {})
    names = list(names) if names is not None else [f"listen{i}" for i in range(len(sockets))]
    if len(names) != len(sockets):
        raise ValueError("one name per socket")
    child_env["LISTEN_FDNAMES"] = ":".join(names)
    fds = [sock.fileno() for sock in sockets]
    shim = [sys.executable, "-c", _SHIM, str(len(fds)), *map(str, fds), *argv]
    return subprocess.Popen(shim, env=child_env, cwd=cwd, pass_fds=fds, **popen)
