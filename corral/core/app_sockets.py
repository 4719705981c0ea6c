"""The listening sockets of cluster-mode apps, bound once by the daemon (SPEC 1.6).

An app's sockets are bound when its first instance launches and stay open while the app
runs, across restarts and reloads, so that no connection is refused while processes
change. They are closed when the app is stopped or deleted.
"""

from __future__ import annotations

import pwd
import socket

from corral.config.model import AppConfig
from corral.core.listen import ListenAddress, bind_listeners, close_listeners, parse_listen


class AppSockets:
    def __init__(self) -> None:
        self._bound: dict[
            int, tuple[tuple[str, ...], list[socket.socket], list[ListenAddress]]
        ] = {}

    def fds_for(self, app_id: int, config: AppConfig) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The fds (and names) to pass to an instance; binds them on first use.

        Raises OSError (address in use...) or ValueError (bad address): the launch fails
        with that message."""
        if not config.listen:
            self.close(app_id)
            return (), ()
        wanted = tuple(config.listen)
        bound = self._bound.get(app_id)
        if bound is None or bound[0] != wanted:
            self.close(app_id)
            addresses = [parse_listen(address) for address in wanted]
            owner = _owner(config)
            socks = bind_listeners(addresses, unix_owner=owner)
            bound = (wanted, socks, addresses)
            self._bound[app_id] = bound
        _, socks, addresses = bound
        return tuple(s.fileno() for s in socks), tuple(a.name for a in addresses)

    def close(self, app_id: int) -> None:
        bound = self._bound.pop(app_id, None)
        if bound is not None:
            close_listeners(bound[1], bound[2])

    def close_all(self) -> None:
        for app_id in list(self._bound):
            self.close(app_id)


def _owner(config: AppConfig) -> tuple[int, int] | None:
    """Unix sockets of an app that runs as another user belong to that user."""
    if config.user is None:
        return None
    entry = pwd.getpwnam(config.user)
    return entry.pw_uid, entry.pw_gid
