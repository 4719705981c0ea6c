"""The hub's settings: where it lives, how it is served, how long it keeps samples."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HOME_ENV = "CORRAL_HUB_HOME"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8766
DEFAULT_RETENTION_DAYS = 7


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".corral-hub")


@dataclass(frozen=True)
class HubConfig:
    home: Path
    """The hub's folder: hub.db (SQLite default) and hub.key (seals the buckets' keys)."""
    database_url: str = ""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    cert_file: Path | None = None
    key_file: Path | None = None
    public_origin: str | None = None
    """The origin users type; None: the scheme, host and port the hub is reached at."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values accepted (DNS-rebinding guard); empty: the bind host, the
    loopback names and the public origin's host."""
    session_idle_seconds: float = 30 * 60
    session_absolute_seconds: float = 12 * 3600
    max_body_bytes: int = 256 * 1024
    retention_days: float = DEFAULT_RETENTION_DAYS
    """Default for new buckets: samples older than this are pruned."""
    prune_every_seconds: float = 300.0
    alerts_every_seconds: float = 15.0
    action_timeout_seconds: float = 60.0
    """An action the agent has not answered after this long is marked lost."""
    action_sweep_every_seconds: float = 10.0
    handshake_timeout: float = 10.0

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'hub.db'}"

    @property
    def key_path(self) -> Path:
        return self.home / "hub.key"

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def hosts(self) -> list[str]:
        """What TrustedHostMiddleware accepts (as the panel's PanelConfig.hosts)."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        hosts = {self.host, "127.0.0.1", "localhost", "[::1]"}
        if self.public_origin:
            hosts.add(urlsplit(self.public_origin).hostname or self.public_origin)
        return sorted(hosts)
