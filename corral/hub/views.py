"""What the pages and their JSON twins show, read from the database. Every query here
takes the bucket's id and filters by it: no function can return another bucket's rows
(the audit log is filtered by the bucket's public id, or shown whole to hub admins)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import (
    Action,
    AlertEvent,
    AlertRule,
    AppSample,
    AuditEntry,
    Bucket,
    Membership,
    Server,
    ServerSample,
    User,
)
from corral.hub.roles import Principal, Role

CHART_SECONDS = 3600.0
CHART_POINTS = 240


def bucket_list(db: DbSession, principal: Principal) -> list[dict[str, Any]]:
    if not principal.roles:
        return []
    rows = db.scalars(select(Bucket).where(Bucket.id.in_(principal.roles)).order_by(Bucket.name))
    return [
        {"public_id": b.public_id, "name": b.name, "role": principal.roles[b.id].label}
        for b in rows
    ]


def _server(server: Server) -> dict[str, Any]:
    latest = json.loads(server.last_metrics) if server.last_metrics else None
    info = latest["server"] if latest else None
    memory = info["memory"] if info else None
    return {
        "id": server.id,
        "server_id": server.server_id,
        "hostname": server.hostname,
        "addresses": json.loads(server.addresses),
        "connected": server.connected,
        "first_seen": server.first_seen,
        "last_seen": server.last_seen,
        "agent_version": server.agent_version,
        "remote_actions": server.remote_actions,
        "agent_password": server.password_params is not None,
        "load": info["load"] if info else None,
        "cpu_percent": info["cpu"]["percent"] if info else None,
        "memory_used": memory["total"] - memory["available"] if memory else None,
        "memory_total": memory["total"] if memory else None,
        "apps": latest["apps"] if latest else [],
    }


def servers(db: DbSession, bucket_id: int) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(Server).where(Server.bucket_id == bucket_id).order_by(Server.hostname, Server.id)
    )
    return [_server(s) for s in rows]


def find_server(db: DbSession, bucket_id: int, server_pk: str) -> Server | None:
    if not server_pk.isdigit() or len(server_pk) > 18:
        return None
    return db.scalar(
        select(Server).where(Server.bucket_id == bucket_id, Server.id == int(server_pk))
    )


def server_detail(db: DbSession, server: Server) -> dict[str, Any]:
    since = time.time() - CHART_SECONDS
    samples = db.scalars(
        select(ServerSample)
        .where(ServerSample.server_id == server.id, ServerSample.at >= since)
        .order_by(ServerSample.at)
    ).all()
    apps: dict[str, list[AppSample]] = {}
    for row in db.scalars(
        select(AppSample)
        .where(AppSample.server_id == server.id, AppSample.at >= since)
        .order_by(AppSample.at)
    ):
        apps.setdefault(f"{row.name}#{row.instance}", []).append(row)
    out = _server(server)
    out["series"] = {
        "cpu_percent": [[s.at, s.cpu_percent] for s in samples][-CHART_POINTS:],
        "memory_used": [[s.at, s.memory_total - s.memory_available] for s in samples][
            -CHART_POINTS:
        ],
        "apps": {
            name: {
                "cpu": [[r.at, r.cpu] for r in rows if r.cpu is not None][-CHART_POINTS:],
                "memory": [[r.at, r.memory] for r in rows if r.memory is not None][-CHART_POINTS:],
                "restarts": [[r.at, r.restarts] for r in rows][-CHART_POINTS:],
            }
            for name, rows in apps.items()
        },
    }
    return out


def actions(db: DbSession, bucket_id: int, limit: int = 200) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(Action)
        .where(Action.bucket_id == bucket_id)
        .order_by(Action.created_at.desc())
        .limit(limit)
    )
    return [
        {
            "id": a.id,
            "server": a.server_id,
            "hostname": a.hostname,
            "verb": a.verb,
            "target": a.target,
            "requested_by": a.requested_by,
            "with_proof": a.with_proof,
            "state": a.state,
            "code": a.code,
            "message": a.message,
            "created_at": a.created_at,
            "finished_at": a.finished_at,
        }
        for a in rows
    ]


def members(db: DbSession, bucket_id: int) -> list[dict[str, Any]]:
    rows = db.execute(
        select(User.id, User.username, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.bucket_id == bucket_id)
        .order_by(User.username)
    )
    return [{"user_id": uid, "username": name, "role": role} for uid, name, role in rows]


def owners(db: DbSession, bucket_id: int) -> int:
    rows = db.scalars(
        select(Membership).where(
            Membership.bucket_id == bucket_id, Membership.role == Role.OWNER.label
        )
    )
    return len(rows.all())


def alerts(db: DbSession, bucket_id: int, limit: int = 200) -> dict[str, Any]:
    rules = db.scalars(
        select(AlertRule).where(AlertRule.bucket_id == bucket_id).order_by(AlertRule.id)
    )
    events = db.execute(
        select(AlertEvent, Server.hostname)
        .join(Server, Server.id == AlertEvent.server_id)
        .where(AlertEvent.bucket_id == bucket_id)
        .order_by(AlertEvent.started_at.desc())
        .limit(limit)
    )
    return {
        "rules": [
            {"id": r.id, "kind": r.kind, "threshold": r.threshold, "window": r.window_seconds}
            for r in rules
        ],
        "events": [
            {
                "id": e.id,
                "hostname": hostname,
                "app": e.app,
                "state": e.state,
                "message": e.message,
                "started_at": e.started_at,
                "resolved_at": e.resolved_at,
                "webhook": e.webhook_status,
            }
            for e, hostname in events
        ],
    }


AUDIT_ROWS = 500


def audit_entries(db: DbSession, bucket_public_id: str | None) -> list[dict[str, Any]]:
    """The newest entries: of one bucket, or (None: for hub administrators) of all."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(AUDIT_ROWS)
    if bucket_public_id is not None:
        query = query.where(AuditEntry.bucket == bucket_public_id)
    return [
        {
            "at": row.at,
            "actor": row.actor,
            "bucket": row.bucket,
            "action": row.action,
            "result": row.result,
            "detail": row.detail,
            "address": row.address,
        }
        for row in db.scalars(query)
    ]
