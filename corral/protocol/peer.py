"""Who is at the other end of a unix socket: the kernel's SO_PEERCRED record.

The daemon's control socket and the helper's socket both decide by it; neither trusts
anything the peer says about itself.
"""

from __future__ import annotations

import socket
import struct

_UCRED = struct.Struct("3i")


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end, as the kernel recorded them at connect()."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return int(pid), int(uid), int(gid)
