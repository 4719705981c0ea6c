"""Spawning the daemon as early as possible for `corral start FILE`.

A cold `corral start ecosystem.yaml` waits for two things: the CLI loading the file, and
the daemon starting up (~0.12 s, mostly imports). They overlap when the daemon is spawned
first. `corral.cli.main` calls `prestart` before argparse and the verbs' imports when the
command line is exactly `start FILE`; `Context.prestart` calls it for the other forms of
`start` with a config file. This module imports only what spawning needs.

Only a home whose state file lists no apps gets a daemon this early: a starting daemon
restores the saved apps, which only a good config file may cause. If the file turns out
to be wrong, `Context.abandon_prestart` stops the daemon again.
"""

from __future__ import annotations

import subprocess
from typing import NamedTuple

from corral.cli.connect import NoDaemon, connect, start_daemon
from corral.config.filenames import is_config_file
from corral.paths import Home
from corral.protocol.client import ControlClient


class Prestart(NamedTuple):
    """What `prestart` found: a daemon already listening, or one it spawned (not waited
    for), or neither (the home holds saved apps: the daemon is started later, as usual)."""

    client: ControlClient | None
    starting: subprocess.Popen[bytes] | None


def starts_config_file(args: list[str]) -> bool:
    """Whether the command line is exactly `start FILE`, FILE named like a config file."""
    return (
        len(args) == 2
        and args[0] == "start"
        and not args[1].startswith("-")
        and is_config_file(args[1])
    )


def prestart(home: Home) -> Prestart:
    if holds_saved_apps(home):
        return Prestart(None, None)
    try:
        return Prestart(connect(home, autostart=False), None)
    except NoDaemon:
        return Prestart(None, start_daemon(home))


def holds_saved_apps(home: Home) -> bool:
    """Whether the state file may list apps; only a small file is read to find out."""
    import json

    try:
        if home.state.stat().st_size > 1024:
            return True
        return bool(json.loads(home.state.read_text(encoding="utf-8")).get("apps"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True
