"""GET /api/v1/tenants/{tenant}/apps/{app}/metrics: what the app page's chart draws.

The samples were stored by the panel's sampler (corral/panel/sampler.py). A long range
is averaged in the database into at most `max_points` time buckets, so a week of 10 s
samples costs one grouped query, not 60 000 rows sent to the browser.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Float, Integer, Select, cast, func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.elements import ColumnElement
from starlette.responses import JSONResponse, Response

from corral.panel.db.models import MetricSample
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import Right, tenant
from corral.panel.routing import Ctx, registry
from corral.panel.sampler import sampling_interval

DEFAULT_RANGE_SECONDS = 3600.0
DEFAULT_MAX_POINTS = 300
MAX_POINTS_LIMIT = 5000

Point = dict[str, float | int]

POINTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["app", "now", "interval", "points"],
    "properties": {
        "app": {"type": "string"},
        "now": {"type": "number", "description": "The server's Unix time."},
        "interval": {"type": "number", "description": "Seconds between samples."},
        "points": {
            "type": "array",
            "description": "Oldest first.",
            "items": {
                "type": "object",
                "required": ["at", "cpu", "memory", "instances"],
                "properties": {
                    "at": {"type": "number", "description": "Unix time."},
                    "cpu": {"type": "number", "description": "Percent of one core, all instances."},
                    "memory": {"type": "integer", "description": "RSS bytes, all instances."},
                    "instances": {"type": "integer", "description": "Running instances."},
                },
            },
        },
    },
}


class QueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_query(query: Mapping[str, str], now: float) -> tuple[float, int]:
    """(since, max_points) from the query string, or a QueryError naming the bad one."""
    since = now - DEFAULT_RANGE_SECONDS
    raw = query.get("since")
    if raw is not None:
        try:
            since = float(raw)
        except ValueError:
            raise QueryError("since", f"must be a Unix time in seconds, not {raw!r}") from None
        if not math.isfinite(since) or since < 0:
            raise QueryError("since", f"must be a Unix time in seconds, not {raw!r}")
    max_points = DEFAULT_MAX_POINTS
    raw = query.get("max_points")
    if raw is not None:
        try:
            max_points = int(raw)
        except ValueError:
            raise QueryError("max_points", f"must be a whole number, not {raw!r}") from None
        if not 2 <= max_points <= MAX_POINTS_LIMIT:
            raise QueryError("max_points", f"must be between 2 and {MAX_POINTS_LIMIT}")
    return since, max_points


def _point(at: float, cpu: float, memory: float, instances: float) -> Point:
    return {
        "at": round(float(at), 3),
        "cpu": round(float(cpu), 2),
        "memory": round(float(memory)),
        "instances": round(float(instances)),
    }


def _bucket(dialect: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    # The values are positive, so truncation is floor; PostgreSQL's CAST rounds instead,
    # and SQLite only has floor() when built with its math functions.
    if dialect == "postgresql":
        return func.floor(value)
    return cast(value, Integer)


def read_points(
    db: DbSession, tenant_id: int, app: str, since: float, max_points: int
) -> list[Point]:
    """The app's samples since `since`, oldest first, averaged into <= max_points buckets."""
    where = (
        MetricSample.tenant_id == tenant_id,
        MetricSample.app == app,
        MetricSample.at >= since,
    )
    count, first, last = db.execute(
        select(func.count(), func.min(MetricSample.at), func.max(MetricSample.at)).where(*where)
    ).one()
    if not count:
        return []
    columns = (MetricSample.at, MetricSample.cpu, MetricSample.memory, MetricSample.instances)
    if count <= max_points:
        rows: Sequence[Any] = db.execute(
            select(*columns).where(*where).order_by(MetricSample.at)
        ).all()
        return [_point(*row) for row in rows]
    # Buckets aligned on multiples of `width`: a range of `span` touches at most
    # span / width + 1 = max_points of them (the margin absorbs rounding).
    width = (float(last) - float(first)) / (max_points - 1) * (1 + 1e-9)
    dialect = db.get_bind().dialect.name
    inner = (
        select(*columns, _bucket(dialect, MetricSample.at / width).label("bucket"))
        .where(*where)
        .subquery()
    )
    grouped: Select[Any] = (
        select(
            func.avg(inner.c.at),
            func.avg(inner.c.cpu),
            func.avg(cast(inner.c.memory, Float)),
            func.avg(cast(inner.c.instances, Float)),
        )
        .group_by(inner.c.bucket)
        .order_by(inner.c.bucket)
    )
    return [_point(*row) for row in db.execute(grouped).all()]


@registry.api(
    "/api/v1/tenants/{tenant}/apps/{app}/metrics", need=tenant(Right.ACCESS), name="app_metrics"
)
@describe(
    query=(
        QueryParam(
            "since",
            {"type": "number", "minimum": 0},
            "Unix time of the oldest sample wanted; default one hour ago.",
        ),
        QueryParam(
            "max_points",
            {"type": "integer", "minimum": 2, "maximum": MAX_POINTS_LIMIT},
            f"At most this many points (default {DEFAULT_MAX_POINTS}): samples are "
            "averaged over equal time buckets.",
        ),
    ),
    response=POINTS_SCHEMA,
)
def app_metrics(ctx: Ctx) -> Response:
    """CPU and memory of one app over time, oldest first.

    Sampled by the panel every `metrics.interval` and kept for `metrics.retention`. An
    app without samples (new, or unknown) has an empty list.
    """
    assert ctx.tenant is not None  # a tenant route: the wrapper resolved it
    now = time.time()
    try:
        since, max_points = parse_query(ctx.request.query_params, now)
    except QueryError as exc:
        return JSONResponse(
            {"error": str(exc), "errors": {exc.field: exc.message}}, status_code=422
        )
    app = ctx.params["app"]
    with ctx.panel.database.session() as db:
        points = read_points(db, ctx.tenant.id, app, since, max_points)
        interval = sampling_interval(db, ctx.panel.config)
    return JSONResponse(
        {"app": app, "now": round(now, 3), "interval": interval, "points": points},
        headers={"Cache-Control": "no-store"},
    )
