"""Storing what agents send: hello (the server's row), metrics (samples), action results.
Plain sync functions on a database session: the agent endpoint runs them in a thread."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import Action, AppSample, Server, ServerSample


def record_hello(db: DbSession, bucket_id: int, hello: dict[str, Any], now: float) -> int:
    """The server's row (made on its first hello), marked connected; its id."""
    server = db.scalar(
        select(Server).where(Server.bucket_id == bucket_id, Server.server_id == hello["server_id"])
    )
    if server is None:
        server = Server(bucket_id=bucket_id, server_id=hello["server_id"], first_seen=now)
        db.add(server)
    server.hostname = hello["hostname"]
    server.agent_version = hello["agent_version"]
    server.remote_actions = hello["remote_actions"]
    # Public argon2 salt and costs only: what the action form needs to derive a proof.
    params = hello["password"]
    server.password_params = json.dumps(params) if params is not None else None
    server.last_seen = now
    server.connected = True
    db.flush()
    return server.id


def record_metrics(db: DbSession, server_pk: int, metrics: dict[str, Any], now: float) -> None:
    server = db.get(Server, server_pk)
    if server is None:  # removed by an admin while connected
        return
    info = metrics["server"]
    server.hostname = info["hostname"]
    server.addresses = json.dumps(info["addresses"])
    server.last_seen = now
    server.connected = True
    server.last_metrics = json.dumps(metrics, separators=(",", ":"))
    db.add(
        ServerSample(
            server_id=server_pk,
            at=now,
            load1=info["load"][0],
            cpu_percent=info["cpu"]["percent"],
            memory_total=info["memory"]["total"],
            memory_available=info["memory"]["available"],
            swap_used=info["memory"]["swap_used"],
        )
    )
    db.add_all(
        AppSample(
            server_id=server_pk,
            at=now,
            name=app["name"],
            app_id=app["id"],
            instance=app["instance"],
            status=app["status"],
            cpu=app["cpu"],
            memory=app["memory"],
            restarts=app["restarts"],
            unstable_restarts=app["unstable_restarts"],
            exec_mode=app["exec_mode"],
            git_revision=app["git_revision"],
            custom=json.dumps(app["custom"], separators=(",", ":")),
        )
        for app in metrics["apps"]
    )


def record_result(db: DbSession, bucket_id: int, server_pk: int, result: dict[str, Any]) -> None:
    """An action's outcome; only an action this bucket sent to this server is updated."""
    db.execute(
        update(Action)
        .where(
            Action.id == result["id"],
            Action.bucket_id == bucket_id,
            Action.server_id == server_pk,
            Action.state == "sent",
        )
        .values(
            state="ok" if result["ok"] else "refused",
            code=result["code"],
            message=result["message"][:4096],
            finished_at=time.time(),
        )
    )


def record_gone(db: DbSession, server_pk: int, now: float) -> None:
    """The agent's connection ended: the server is offline, its unanswered actions lost."""
    server = db.get(Server, server_pk)
    if server is not None:
        server.connected = False
    db.execute(
        update(Action)
        .where(Action.server_id == server_pk, Action.state == "sent")
        .values(state="lost", message="the agent disconnected before answering", finished_at=now)
    )


def expire_actions(db: DbSession, now: float, timeout: float) -> list[int]:
    """Actions still `sent` after `timeout` s (the agent is connected but never answered)
    become `lost`, so nothing stays pending forever; the buckets that changed. A late
    answer is then ignored (record_result updates only `sent` actions)."""
    stale = db.execute(
        select(Action.id, Action.bucket_id).where(
            Action.state == "sent", Action.created_at < now - timeout
        )
    ).all()
    if not stale:
        return []
    db.execute(
        update(Action)
        .where(Action.id.in_([row.id for row in stale]), Action.state == "sent")
        .values(
            state="lost", message=f"no answer from the agent within {timeout:g} s",
            finished_at=now,
        )
    )  # fmt: skip
    return sorted({row.bucket_id for row in stale})
