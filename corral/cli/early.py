"""Spawning the daemon as early as possible for `corral start FILE`.

A cold `corral start ecosystem.yaml` waits for two things: the CLI loading the file, and
the daemon starting up (~0.12 s, mostly imports). They overlap when the daemon is spawned
first, and the sooner it is spawned, the sooner `corral start` returns.

- `spawn_before_parsing` runs first thing in `corral.cli.main`, when the command line is
  exactly `start FILE`: it imports nothing the interpreter has not already loaded (no
  typing, pathlib, socket or subprocess) and spawns the daemon of a fresh home.
- `prestart` is what `Context.prestart` calls for the other forms of `start` with a config
  file: it may connect to a daemon already listening, so it needs the client.

Only a home whose state file lists no apps gets a daemon this early: a starting daemon
restores the saved apps, which only a good config file may cause. If the file turns out
to be wrong, `Context.abandon_prestart` stops the daemon again.
"""

from __future__ import annotations

import os

from corral.config.filenames import is_config_file
from corral.homedir import SOCKET_NAME, STATE_NAME, SUN_PATH_MAX, home_root

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows it
if TYPE_CHECKING:
    from corral.cli.spawn import DaemonProcess
    from corral.paths import Home
    from corral.protocol.client import ControlClient


class Prestart:
    """What a prestart found: a daemon already listening (`client`), or one it spawned and
    did not wait for (`starting`), or neither: the home holds saved apps, and the daemon
    is started later, as usual."""

    __slots__ = ("client", "starting")

    def __init__(self, client: ControlClient | None, starting: DaemonProcess | None) -> None:
        self.client = client
        self.starting = starting


def starts_config_file(args: list[str]) -> bool:
    """Whether the command line is exactly `start FILE`, FILE named like a config file."""
    return (
        len(args) == 2
        and args[0] == "start"
        and not args[1].startswith("-")
        and is_config_file(args[1])
    )


def spawn_before_parsing(args: list[str]) -> Prestart | None:
    """For `start FILE` with no daemon and no saved apps: the daemon, spawned now.

    None when the command line is anything else, or the home may have a daemon (its
    socket exists), saved apps, or a problem (it cannot be created, its socket path is
    too long, the spawn fails): the start verb then deals with the home as usual, and
    says what is wrong, if anything.
    """
    if not starts_config_file(args):
        return None
    from corral.cli.spawn import spawn

    root = home_root()
    socket = os.path.join(root, SOCKET_NAME)
    if len(os.fsencode(socket)) > SUN_PATH_MAX or os.path.lexists(socket):
        return None
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)  # the daemon tightens it (Home.ensure)
        if holds_saved_apps(os.path.join(root, STATE_NAME)):
            return None
        return Prestart(None, spawn(root))
    except OSError:
        return None


def prestart(home: Home) -> Prestart:
    """A client of the daemon already listening, or a daemon spawned now."""
    from corral.cli.connect import NoDaemon, connect, start_daemon

    if holds_saved_apps(home.state):
        return Prestart(None, None)
    try:
        return Prestart(connect(home, autostart=False), None)
    except NoDaemon:
        return Prestart(None, start_daemon(home))


def holds_saved_apps(state_file: str | os.PathLike[str]) -> bool:
    """Whether the state file may list apps; only a small file is read to find out."""
    try:
        if os.stat(state_file).st_size > 1024:
            return True
        with open(state_file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    import json

    try:
        return bool(json.loads(text).get("apps"))
    except (ValueError, AttributeError):
        return True
