"""Where everything lives inside a corral home ($CORRAL_HOME, default ~/.corral)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corral.homedir import SOCKET_NAME, STATE_NAME, home_root


class Home:
    """The files of one daemon. Every path the daemon or CLI touches comes from here.

    A plain class rather than a dataclass: `corral ls` imports it, and dataclasses cost
    the CLI's start-up several milliseconds.
    """

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Home) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Home:
        return cls(Path(home_root(environ)))

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_NAME

    @property
    def lock(self) -> Path:
        """Held (flock) by the running daemon for its whole life: one daemon per home."""
        return self.root / "daemon.lock"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.root / "corral.log"

    @property
    def state(self) -> Path:
        """Live state, rewritten atomically on every change."""
        return self.root / STATE_NAME

    @property
    def dump(self) -> Path:
        """Written by `corral save`, read by `corral resurrect`."""
        return self.root / "dump.json"

    @property
    def settings(self) -> Path:
        """Daemon-wide settings (`corral set`)."""
        return self.root / "settings.json"

    @property
    def tenant_file(self) -> Path:
        """The tenant this home serves, remembered from the first daemon the panel started
        here (bound into every secret: docs/SECRETS.md)."""
        return self.root / "tenant"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self, panel_gid: int | None = None) -> None:
        """Create the home (0700) and its log folder (0700); tighten either if too open.

        `panel_gid` (a tenant daemon's CORRAL_PANEL_GID): a home whose group is the panel's
        keeps its group r-x and setgid bits, so that the panel can reach the socket; write
        and "other" bits are always removed.
        """
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.root.stat()
        keep = 0o2050 if panel_gid is not None and info.st_gid == panel_gid else 0
        if info.st_mode & 0o077 & ~keep:
            os.chmod(self.root, 0o700 | (info.st_mode & keep))
        self.logs.mkdir(mode=0o700, exist_ok=True)
        # Tenant only; not setgid either (a setgid home passes the bit on to it), so that
        # the files in it get the tenant's group, not the panel's.
        if self.logs.stat().st_mode & 0o7077:
            os.chmod(self.logs, 0o700)
