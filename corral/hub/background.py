"""The hub's background work: pruning samples past each bucket's retention, evaluating
alerts (webhooks POSTed from a thread), and marking unanswered actions lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import delete, select

from corral.hub.alerts import deliver_all, run_alerts
from corral.hub.db.engine import Database
from corral.hub.db.models import AppSample, Bucket, Server, ServerSample
from corral.hub.ingest import expire_actions
from corral.hub.services import Hub

log = logging.getLogger("corral.hub")


def prune(database: Database, now: float | None = None) -> int:
    """Delete samples older than their bucket's retention; how many went."""
    now = time.time() if now is None else now
    removed = 0
    with database.session() as db:
        for bucket_id, days in db.execute(select(Bucket.id, Bucket.retention_days)).all():
            servers = select(Server.id).where(Server.bucket_id == bucket_id)
            cutoff = now - days * 86400
            for model in (ServerSample, AppSample):
                result = db.execute(
                    delete(model).where(model.server_id.in_(servers), model.at < cutoff)
                )
                removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


async def check_alerts(hub: Hub) -> None:
    results = await asyncio.to_thread(run_alerts, hub.database)
    for bucket_id, changes in results:
        if changes:
            await asyncio.to_thread(deliver_all, hub.database, changes)
            hub.notify(bucket_id)


def _every(
    seconds: Callable[[Hub], float], job: Callable[[Hub], Awaitable[None]], name: str
) -> Callable[[Hub], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def task(hub: Hub) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds(hub))
                try:
                    await job(hub)
                except Exception:  # one bad round must not end the loop
                    log.exception("hub %s failed", name)

        running = asyncio.ensure_future(loop())
        try:
            yield
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    return task


async def _prune(hub: Hub) -> None:
    await asyncio.to_thread(prune, hub.database)


def _expire(hub: Hub) -> list[int]:
    with hub.database.session() as db:
        return expire_actions(db, time.time(), hub.config.action_timeout_seconds)


async def sweep_actions(hub: Hub) -> None:
    """Unanswered actions past the time-out become lost; their buckets' pages refresh."""
    for bucket_id in await asyncio.to_thread(_expire, hub):
        hub.notify(bucket_id)


def default_tasks() -> tuple[Callable[[Hub], contextlib.AbstractAsyncContextManager[None]], ...]:
    return (
        _every(lambda h: h.config.prune_every_seconds, _prune, "pruning"),
        _every(lambda h: h.config.alerts_every_seconds, check_alerts, "alerts"),
        _every(lambda h: h.config.action_sweep_every_seconds, sweep_actions, "action time-outs"),
    )
