"""`Panel`: the services every route uses, built once per process by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from starlette.requests import HTTPConnection

from corral.panel.audit import AuditLog
from corral.panel.auth import Authenticator, cookie_name
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import Tenant
from corral.panel.security.throttle import LoginThrottle

if TYPE_CHECKING:
    from corral.panel.gateway import DaemonStarter, TenantDaemon
    from corral.panel.helper_client import HelperClient
    from corral.panel.templating import Templates


@dataclass(frozen=True)
class TenantRef:
    """A detached snapshot of a tenant row, safe to pass between threads."""

    id: int
    name: str
    home: Path
    app_limit: int
    system_user: str | None = None
    """The tenant's own system user (isolated mode); None in development mode."""

    @classmethod
    def of(cls, row: Tenant) -> TenantRef:
        return cls(row.id, row.name, Path(row.home), row.app_limit, row.system_user)


class Panel:
    def __init__(
        self,
        config: PanelConfig,
        database: Database,
        templates: Templates,
        starter: DaemonStarter | None = None,
    ) -> None:
        self.config = config
        self.database = database
        self.templates = templates
        self.auth = Authenticator(database, config)
        self.audit = AuditLog(database)
        self.throttle = LoginThrottle()
        self.helper: HelperClient | None = None
        """The privileged helper, in isolated mode."""
        if config.helper_socket is not None:
            from corral.panel.helper_client import HelperClient

            self.helper = HelperClient(config.helper_socket)
        self.starter: DaemonStarter = starter if starter is not None else self._own_starter()
        self.cookie_name = cookie_name(config)

    def _own_starter(self) -> DaemonStarter:
        """How tenants' daemons start when the caller did not say: through the helper, as
        each tenant's user (isolated mode), or under the panel's uid (development)."""
        from corral.panel.gateway import DevStarter
        from corral.panel.helper_client import HelperStarter

        if self.helper is not None:
            return HelperStarter(self.helper, self.app_limit_of)
        return DevStarter(limit_of=self.app_limit_of)

    def app_limit_of(self, name: str) -> int:
        """The tenant's app limit now (what a daemon that starts gets)."""
        from corral.panel.gateway import DaemonDown

        tenant = self.find_tenant(name)
        if tenant is None:
            raise DaemonDown(f"no tenant named {name!r}: its daemon is not started")
        return tenant.app_limit

    def find_tenant(self, name: str) -> TenantRef | None:
        with self.database.session() as db:
            row = db.scalar(select(Tenant).where(Tenant.name == name))
            return TenantRef.of(row) if row else None

    def tenants_for(self, tenant_ids: list[int] | None) -> list[TenantRef]:
        """Every tenant (None) or those ids, by name."""
        stmt = select(Tenant).order_by(Tenant.name)
        if tenant_ids is not None:
            stmt = stmt.where(Tenant.id.in_(tenant_ids))
        with self.database.session() as db:
            return [TenantRef.of(row) for row in db.scalars(stmt)]

    def daemon(self, tenant: TenantRef, *, start: bool = False) -> TenantDaemon:
        """The only way to a tenant's apps: its own daemon's socket (SPEC 2.2).

        `start`: may this request start a stopped daemon? Only state-changing requests
        pass True: a daemon that starts restores the apps its state says should run, so
        a page view must never do it (GET never changes state).
        """
        from corral.panel.gateway import NoAutostart, TenantDaemon

        starter = self.starter if start else NoAutostart()
        return TenantDaemon(tenant.home, starter, tenant=tenant.name)

    def origin_of(self, conn: HTTPConnection) -> str:
        """The panel's own origin, which Origin headers must equal exactly."""
        if self.config.public_origin:
            return self.config.public_origin.rstrip("/")
        host = conn.headers.get("host") or f"{self.config.host}:{self.config.port}"
        return f"{self.config.scheme}://{host}"
