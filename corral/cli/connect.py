"""Reaching the daemon: connect to its socket, starting it on demand (SPEC 1.1)."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from corral.homedir import SUN_PATH_MAX
from corral.protocol.client import ControlClient

if TYPE_CHECKING:
    from corral.cli.spawn import DaemonProcess
    from corral.paths import Home

START_TIMEOUT = 10.0
"""How long a freshly spawned daemon gets to open its socket."""
POLL_INTERVAL = 0.002
"""A daemon takes ~0.1 s to listen and `corral start` waits for it: a longer step would be
overshoot on that path, and a failed connect() to a missing socket costs microseconds."""
CONNECT_TIMEOUT = 5.0
"""Timeout of the connect() call itself (a daemon that accepts nothing)."""

# Errors that mean "nobody is listening there" (as opposed to "not allowed" or "broken").
_ABSENT = (FileNotFoundError, ConnectionRefusedError)


class DaemonUnavailable(Exception):
    """The daemon cannot be reached or started; the message is one line for the user."""


class NoDaemon(DaemonUnavailable):
    """No daemon is running and we were asked not to start one."""


def _try_connect(home: Home) -> ControlClient:
    client = ControlClient.connect(home.socket, timeout=CONNECT_TIMEOUT)
    client.set_timeout(None)
    return client


def _unreachable(home: Home, why: str) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"cannot reach the daemon at {home.socket}: {why} (see {home.daemon_log})"
    )


def connect(home: Home, *, autostart: bool = True) -> ControlClient:
    """A client connected to the daemon of `home`, started first if needed and allowed."""
    if len(os.fsencode(home.socket)) > SUN_PATH_MAX:
        raise DaemonUnavailable(
            f"the socket path {home.socket} is longer than {SUN_PATH_MAX} bytes, the limit "
            "of unix sockets: set CORRAL_HOME to a shorter path"
        )
    try:
        return _try_connect(home)
    except _ABSENT:
        pass
    except OSError as exc:
        raise _unreachable(home, exc.strerror or str(exc)) from None
    if not autostart:
        raise NoDaemon(f"no daemon running (no socket at {home.socket})")
    return wait_for_daemon(home, start_daemon(home))


def start_daemon(home: Home) -> DaemonProcess:
    """Create the home if needed and spawn the daemon, without waiting for it to listen."""
    try:
        home.ensure()
    except OSError as exc:
        raise DaemonUnavailable(f"cannot create {home.root}: {exc.strerror or exc}") from None
    return spawn_daemon(home)


def spawn_daemon(home: Home, extra_env: dict[str, str] | None = None) -> DaemonProcess:
    """Start the daemon of `home` detached (corral.cli.spawn); `extra_env` on top of this
    process's environment (the panel's CORRAL_TENANT)."""
    from corral.cli.spawn import spawn

    try:
        return spawn(str(home.root), extra_env)
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot start the daemon ({sys.executable}): {exc.strerror or exc}"
        ) from None


def wait_for_daemon(
    home: Home, proc: DaemonProcess | None, timeout: float = START_TIMEOUT
) -> ControlClient:
    """Poll the socket until it accepts, every 2 ms; fail fast on a crash.

    A daemon that exits with status 0 found another daemon holding the lock: that one
    is (about to be) listening, so we keep trying until the deadline.
    """
    deadline = time.monotonic() + timeout
    failed: BaseException | None = None
    while True:
        try:
            return _try_connect(home)
        except _ABSENT as exc:
            failed = exc
        except OSError as exc:
            raise _unreachable(home, exc.strerror or str(exc)) from None
        if proc is not None:
            status = proc.poll()
            if status is not None and status != 0:
                raise DaemonUnavailable(
                    f"the daemon failed to start (exit status {status}); "
                    f"see {home.daemon_log} (socket {home.socket})"
                )
        now = time.monotonic()
        if now >= deadline:
            why = getattr(failed, "strerror", None) or "no answer"
            raise DaemonUnavailable(
                f"the daemon did not open {home.socket} within {timeout:g} s ({why}); "
                f"see {home.daemon_log}"
            )
        time.sleep(min(POLL_INTERVAL, deadline - now))
