"""The audit log (SPEC 2.6): every state-changing action, failed login and rejected
request, with who, when, from where, tenant, app, action and result.

Entries are written in their own transaction, so a refused or failed action is recorded
even when the action's own transaction rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from corral.panel.db.engine import Database
from corral.panel.db.models import AuditEntry

RESULTS = ("ok", "denied", "failed")
DETAIL_MAX = 2000


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    tenant: str | None = None
    app: str | None = None
    action: str | None = None
    result: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 200
    before_id: int | None = None
    """Paging: entries older than this id."""


class AuditLog:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(
        self,
        *,
        actor: str,
        action: str,
        result: str = "ok",
        user_id: int | None = None,
        address: str = "",
        tenant: str | None = None,
        app: str | None = None,
        detail: str = "",
    ) -> None:
        if result not in RESULTS:
            raise ValueError(f"audit result must be one of {RESULTS}, not {result!r}")
        with self.database.session() as db:
            db.add(
                AuditEntry(
                    at=time.time(),
                    actor=actor[:64],
                    user_id=user_id,
                    address=address[:64],
                    tenant=tenant,
                    app=None if app is None else app[:128],
                    action=action[:64],
                    result=result,
                    detail=detail[:DETAIL_MAX],
                )
            )

    def query(self, where: AuditFilter, tenants: Sequence[str] | None = None) -> list[AuditEntry]:
        """Newest first. `tenants` limits the entries to those tenants (None: all)."""
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(where.limit, 1000))
        if tenants is not None:
            stmt = stmt.where(AuditEntry.tenant.in_(list(tenants)))
        for column, value in (
            (AuditEntry.actor, where.actor),
            (AuditEntry.tenant, where.tenant),
            (AuditEntry.app, where.app),
            (AuditEntry.action, where.action),
            (AuditEntry.result, where.result),
        ):
            if value:
                stmt = stmt.where(column == value)
        if where.since is not None:
            stmt = stmt.where(AuditEntry.at >= where.since)
        if where.until is not None:
            stmt = stmt.where(AuditEntry.at < where.until)
        if where.before_id is not None:
            stmt = stmt.where(AuditEntry.id < where.before_id)
        with self.database.session() as db:
            return list(db.scalars(stmt))
