"""The hub's audit log: who did what, on which bucket, with what result."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import AuditEntry


def record(
    db: DbSession,
    actor: str,
    action: str,
    result: str = "ok",
    *,
    bucket: str | None = None,
    detail: str = "",
    address: str = "",
) -> None:
    db.add(
        AuditEntry(
            at=time.time(),
            actor=actor[:64],
            bucket=bucket,
            action=action[:64],
            result=result[:16],
            detail=detail[:2000],
            address=address[:64],
        )
    )
