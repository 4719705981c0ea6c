"""The panel's settings: where it keeps its data, where it listens, its time-outs.

Everything has a default that works on a fresh machine (SQLite under the panel's home,
127.0.0.1:8765, plain HTTP on loopback). `PanelConfig.from_env` is the one place that
reads environment variables, so tests build configs directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HOME_ENV = "CORRAL_PANEL_HOME"
DATABASE_ENV = "CORRAL_PANEL_DATABASE"
HELPER_SOCKET_ENV = "CORRAL_PANEL_HELPER_SOCKET"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class PanelConfig:
    home: Path
    """The panel's own folder: its SQLite database, the tenants' homes in dev mode."""
    database_url: str = ""
    """A SQLAlchemy URL; empty means SQLite at <home>/panel.db."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    cert_file: Path | None = None
    key_file: Path | None = None
    public_origin: str | None = None
    """The origin users type (`https://panel.example.com`): what Origin headers must equal.
    None: the scheme, host and port the panel is reached at, among `allowed_hosts`."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values accepted (DNS-rebinding guard); empty: the bind host, 127.0.0.1,
    localhost and the public origin's host."""
    session_idle_seconds: float = 30 * 60
    session_absolute_seconds: float = 12 * 3600
    permission_cache_seconds: float = 10.0
    """SPEC 2.4: permissions are cached for at most 10 s."""
    metrics_interval_seconds: float = 10.0
    """How often the panel samples every tenant's apps for the charts."""
    max_body_bytes: int = 1024 * 1024
    tenants_root: Path | None = None
    """Where new tenants' homes are made in development mode; default <home>/tenants."""
    helper_socket: Path | None = None
    """The privileged helper's socket (`corral helper`): set, the panel runs in isolated
    mode, each tenant a system user of its own; None: development mode."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def isolated(self) -> bool:
        """True when tenants run under their own system users (the privileged helper)."""
        return self.helper_socket is not None

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'panel.db'}"

    @property
    def tenants_dir(self) -> Path:
        return self.tenants_root or self.home / "tenants"

    def hosts(self) -> list[str]:
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        hosts = {self.host, "127.0.0.1", "localhost", "[::1]"}
        if self.public_origin:
            hosts.add(self.public_origin.split("://", 1)[-1].rsplit(":", 1)[0])
        return sorted(hosts)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> PanelConfig:
        env = os.environ if environ is None else environ
        home = Path(env.get(HOME_ENV) or Path.home() / ".corral-panel").expanduser().absolute()
        values: dict[str, object] = {"home": home, "database_url": env.get(DATABASE_ENV, "")}
        if env.get(HELPER_SOCKET_ENV):
            values["helper_socket"] = Path(env[HELPER_SOCKET_ENV]).expanduser().absolute()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
