"""Talking to a tenant's daemon as root, without being turned against anything else.

The tenant owns its home: it can replace `.corral` or `corral.sock` with a symlink to any
socket on the machine, and root may connect to all of them. So the socket is found by
walking from the home with O_NOFOLLOW file descriptors (no symlink is ever followed),
must be a socket owned by the tenant's uid, is connected through /proc/self/fd, and the
process listening on it must run as the tenant's uid (SO_PEERCRED) before a byte is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from corral.protocol.client import ControlClient
from corral.protocol.peer import peer_cred

SOCKET_NAME = "corral.sock"
CORRAL_DIR = ".corral"
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Peer:
    """A connection to a process of the tenant's uid listening on the tenant's socket."""

    client: ControlClient
    pid: int
    """The listening process (from the kernel, not from anything the tenant wrote)."""


def socket_path(home: Path) -> Path:
    return home / CORRAL_DIR / SOCKET_NAME


def connect(home: Path, uid: int, timeout: float) -> Peer | None:
    """A connection to the tenant's daemon socket, or None when nothing of the tenant's
    uid listens there (no socket, a symlink, someone else's socket, a refused connect)."""
    fds: list[int] = []
    try:
        fds.append(os.open(home, _PATH_FLAGS | os.O_DIRECTORY))
        fds.append(os.open(CORRAL_DIR, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fds[-1]))
        fds.append(os.open(SOCKET_NAME, _PATH_FLAGS, dir_fd=fds[-1]))
        st = os.fstat(fds[-1])
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{fds[-1]}")
            pid, peer_uid, _gid = peer_cred(sock)
        except OSError:
            sock.close()
            return None
        if peer_uid != uid or pid <= 0:
            sock.close()
            return None
        return Peer(ControlClient(sock), pid)
    except OSError:
        return None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
