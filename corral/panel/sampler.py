"""The panel's metrics sampler (SPEC 2.5): CPU and memory of every tenant's apps, over time.

Every `metrics.interval` it asks each tenant's daemon for its process list (through the
gateway, in a worker thread: daemon and database calls block), sums CPU and RSS over each
app's instances and stores one `MetricSample` per app in a single transaction, then
drops samples older than `metrics.retention`. A tenant whose daemon is not running is
skipped, never started: looking at charts must not wake up a customer's daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from corral.panel.db.models import MetricSample, Setting, Tenant
from corral.panel.settings import get_setting

if TYPE_CHECKING:
    from corral.panel.config import PanelConfig
    from corral.panel.services import Panel, TenantRef

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
"""Seconds a daemon gets to answer `list` (it answers from memory, in milliseconds)."""
PRUNE_EVERY = 60.0
"""Old samples are deleted at most this often: the retention is counted in hours or days,
and a delete over a big table every few seconds would be wasted work."""


@dataclass(frozen=True)
class AppUsage:
    cpu: float
    """Percent of one core, summed over the running instances."""
    memory: int
    """RSS bytes, summed over the running instances."""
    instances: int
    """Instances with a process (pid) right now."""


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[str, AppUsage]:
    """Per app: the sums over its instances' process records (`corral jlist` schema)."""
    totals: dict[str, list[float]] = {}
    for record in records:
        name = record.get("name")
        if not isinstance(name, str):
            continue
        total = totals.setdefault(name, [0.0, 0.0, 0.0])
        if record.get("pid") is None:
            continue  # a stopped or waiting instance uses nothing; the app still gets a row
        total[0] += float(record.get("cpu") or 0.0)  # null before the daemon's first sample
        total[1] += float(record.get("memory") or 0)
        total[2] += 1
    return {
        name: AppUsage(round(cpu, 2), int(memory), int(count))
        for name, (cpu, memory, count) in totals.items()
    }


def sampling_interval(db: DbSession, config: PanelConfig) -> float:
    """`metrics.interval` when an admin has set it, else the panel config's default."""
    if db.get(Setting, "metrics.interval") is None:
        return float(config.metrics_interval_seconds)
    return float(get_setting(db, "metrics.interval"))


def _processes(tenant: TenantRef) -> list[dict[str, Any]] | None:
    """The tenant's process records, or None when its daemon is not running (or hangs)."""
    from corral.panel.gateway import DaemonDown, NoAutostart, TenantDaemon

    # NoAutostart: a stopped daemon stays stopped. The short timeout keeps one hung
    # daemon from holding up every other tenant's samples for long.
    daemon = TenantDaemon(tenant.home, NoAutostart(), timeout=ASK_TIMEOUT)
    try:
        return daemon.processes()
    except DaemonDown as exc:
        log.debug("metrics: tenant %s skipped: %s", tenant.name, exc)
        return None


@dataclass
class _Sampler:
    panel: Panel
    stop: threading.Event = field(default_factory=threading.Event)
    pruned_at: float = float("-inf")
    failing: dict[int, str] = field(default_factory=dict)
    """tenant id -> the last error logged for it: a broken tenant is logged once, not
    every pass."""

    def run(self, now: float | None = None) -> tuple[int, float]:
        """One pass: (samples stored, seconds until the next pass)."""
        usage: dict[int, dict[str, AppUsage]] = {}
        for tenant in self.panel.tenants_for(None):
            if self.stop.is_set():
                return 0, 0.0
            apps = self._ask(tenant)
            if apps is not None:
                usage[tenant.id] = apps
        at = time.time() if now is None else now
        with self.panel.database.session() as db:
            interval = sampling_interval(db, self.panel.config)
            if self.stop.is_set():
                return 0, interval
            # A tenant deleted during the pass would fail the whole insert (foreign key).
            alive = set(db.scalars(select(Tenant.id).where(Tenant.id.in_(list(usage)))))
            rows = [
                MetricSample(
                    tenant_id=tenant_id,
                    app=app,
                    at=at,
                    cpu=sample.cpu,
                    memory=sample.memory,
                    instances=sample.instances,
                )
                for tenant_id, apps in usage.items()
                if tenant_id in alive
                for app, sample in apps.items()
            ]
            db.add_all(rows)
            prune = at - self.pruned_at >= PRUNE_EVERY
            if prune:
                retention = float(get_setting(db, "metrics.retention"))
                db.execute(delete(MetricSample).where(MetricSample.at < at - retention))
        if prune:  # only once the delete is committed
            self.pruned_at = at
        return len(rows), interval

    def _ask(self, tenant: TenantRef) -> dict[str, AppUsage] | None:
        try:
            records = _processes(tenant)
        except Exception as exc:  # one broken tenant must not stop the others' charts
            message = f"{type(exc).__name__}: {exc}"
            if self.failing.get(tenant.id) != message:
                log.warning("metrics: cannot sample tenant %s: %s", tenant.name, message)
            self.failing[tenant.id] = message
            return None
        if self.failing.pop(tenant.id, None) is not None:
            log.info("metrics: tenant %s can be sampled again", tenant.name)
        return None if records is None else aggregate(records)


def sample_once(panel: Panel, *, now: float | None = None) -> int:
    """Sample every tenant once, store the samples, apply retention; returns rows stored."""
    stored, _ = _Sampler(panel).run(now)
    return stored


async def _sample_forever(sampler: _Sampler, executor: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    interval = sampler.panel.config.metrics_interval_seconds
    while True:
        started = loop.time()
        try:
            _, interval = await loop.run_in_executor(executor, sampler.run)
        except Exception:  # the database may be briefly unreachable: try again next time
            log.exception("metrics: sampling pass failed")
        await asyncio.sleep(max(0.0, started + interval - loop.time()))


@contextlib.asynccontextmanager
async def run_sampler(panel: Panel) -> AsyncIterator[None]:
    """Sample in the background for as long as the context is open (the app's lifespan).

    On exit the task is cancelled and awaited at once; a pass still running in the worker
    thread sees `stop`, stores nothing more and ends after its current daemon call.
    """
    sampler = _Sampler(panel)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-sampler")
    task = asyncio.create_task(_sample_forever(sampler, executor), name="corral-sampler")
    try:
        yield
    finally:
        sampler.stop.set()
        task.cancel()
        await asyncio.wait({task})
        executor.shutdown(wait=False, cancel_futures=True)
