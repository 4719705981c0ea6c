"""The audit log screen and its API (SPEC 2.6): filter by actor, tenant, app, action,
result and time; newest first, paged by id (`before`), so a page never shifts while new
entries arrive.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from starlette.responses import JSONResponse, Response

from corral.panel.audit import RESULTS, AuditFilter
from corral.panel.db.models import AuditEntry
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import ADMIN
from corral.panel.routing import Ctx, registry
from corral.panel.validation import FieldErrors

PAGE_SIZE = 100
MAX_LIMIT = 500
TEXT_FILTERS = ("actor", "tenant", "app", "action")
TEXT_MAX = 128
DAY = 86400.0


def parse_time(text: str, *, end_of_day: bool = False) -> float:
    """Unix seconds, or a local date/time as `YYYY-MM-DD[THH:MM[:SS]]` (the server's zone,
    as the screen shows times). A bare date as an upper bound means the end of that day."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be a date, a date and time, or Unix seconds")
        return value
    try:
        parsed = datetime.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or date and time") from None
    seconds = parsed.timestamp()
    if end_of_day and len(text) == 10:  # date only
        seconds += DAY
    return seconds


def parse_filter(query: Mapping[str, str], *, default_limit: int = PAGE_SIZE) -> AuditFilter:
    """The filter a query string asks for; FieldErrors names every bad parameter."""
    errors: dict[str, str] = {}
    texts: dict[str, str | None] = {}
    for key in TEXT_FILTERS:
        value = query.get(key, "").strip()
        if len(value) > TEXT_MAX:
            errors[key] = f"use at most {TEXT_MAX} characters"
        texts[key] = value or None
    result = query.get("result", "").strip() or None
    if result is not None and result not in RESULTS:
        errors["result"] = f"must be one of {', '.join(RESULTS)}"
    times: dict[str, float | None] = {"since": None, "until": None}
    for key in times:
        raw = query.get(key, "").strip()
        if raw:
            try:
                times[key] = parse_time(raw, end_of_day=key == "until")
            except ValueError as exc:
                errors[key] = str(exc)
    since, until = times["since"], times["until"]
    if since is not None and until is not None and until <= since:
        errors["until"] = "must be later than the start"
    limit = default_limit
    raw = query.get("limit", "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            errors["limit"] = f"must be a whole number from 1 to {MAX_LIMIT}"
        else:
            limit = int(raw)
    before: int | None = None
    raw = query.get("before", "").strip()
    if raw:
        if not raw.isdigit():
            errors["before"] = "must be an entry id"
        else:
            before = int(raw)
    if errors:
        raise FieldErrors(errors)
    return AuditFilter(
        actor=texts["actor"],
        tenant=texts["tenant"],
        app=texts["app"],
        action=texts["action"],
        result=result,
        since=since,
        until=until,
        limit=limit,
        before_id=before,
    )


def read_page(ctx: Ctx, where: AuditFilter) -> tuple[list[AuditEntry], int | None]:
    """One page of entries, newest first, and the id to pass as `before` for the next."""
    rows = ctx.panel.audit.query(replace(where, limit=where.limit + 1))
    more = len(rows) > where.limit
    rows = rows[: where.limit]
    return rows, (rows[-1].id if more and rows else None)


def entry_json(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "user_id": row.user_id,
        "address": row.address,
        "tenant": row.tenant,
        "app": row.app,
        "action": row.action,
        "result": row.result,
        "detail": row.detail,
    }


def _known_actions(ctx: Ctx) -> list[str]:
    with ctx.panel.database.session() as db:
        stmt = select(AuditEntry.action).distinct().order_by(AuditEntry.action).limit(500)
        return list(db.scalars(stmt))


@registry.page("/admin/audit", need=ADMIN)
def audit_page(ctx: Ctx) -> Response:
    """The audit log, filtered and paged."""
    query = ctx.request.query_params
    form = {key: query.get(key, "") for key in (*TEXT_FILTERS, "result", "since", "until")}
    try:
        where = parse_filter(query)
    except FieldErrors as exc:
        return ctx.render(
            "audit.html",
            status=422,
            entries=[],
            errors=exc.errors,
            form=form,
            actions=_known_actions(ctx),
            results=RESULTS,
            older_url=None,
            newest_url=None,
        )
    entries, next_before = read_page(ctx, where)
    filters = {k: v for k, v in form.items() if v}
    older = f"/admin/audit?{urlencode({**filters, 'before': next_before})}" if next_before else None
    newest = None
    if where.before_id is not None:
        newest = "/admin/audit" + (f"?{urlencode(filters)}" if filters else "")
    return ctx.render(
        "audit.html",
        entries=entries,
        errors={},
        form=form,
        actions=_known_actions(ctx),
        results=RESULTS,
        older_url=older,
        newest_url=newest,
        filtered=bool(filters),
    )


_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "number", "description": "Unix time."},
        "actor": {"type": "string", "description": "A user name, anonymous or webhook."},
        "user_id": {"type": ["integer", "null"]},
        "address": {"type": "string"},
        "tenant": {"type": ["string", "null"]},
        "app": {"type": ["string", "null"]},
        "action": {"type": "string"},
        "result": {"type": "string", "enum": list(RESULTS)},
        "detail": {"type": "string"},
    },
}
_TIME_HELP = "Unix seconds, or a date YYYY-MM-DD / date and time YYYY-MM-DDTHH:MM (server time)."


@registry.api("/api/v1/audit", need=ADMIN, name="api_audit")
@describe(
    query=(
        *(
            QueryParam(key, {"type": "string"}, f"Only entries with this {key}.")
            for key in TEXT_FILTERS
        ),
        QueryParam("result", {"type": "string", "enum": list(RESULTS)}, "Only this result."),
        QueryParam("since", {"type": "string"}, f"Entries at or after. {_TIME_HELP}"),
        QueryParam(
            "until", {"type": "string"}, f"Entries before (a bare date: its end). {_TIME_HELP}"
        ),
        QueryParam("before", {"type": "integer"}, "Paging: entries older than this id."),
        QueryParam(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            f"At most this many entries (default {PAGE_SIZE}).",
        ),
    ),
    response={
        "type": "object",
        "properties": {
            "entries": {"type": "array", "items": _ENTRY_SCHEMA},
            "next_before": {
                "type": ["integer", "null"],
                "description": "Pass as `before` for the next (older) page; null at the end.",
            },
        },
    },
)
def api_audit(ctx: Ctx) -> Response:
    """The audit log, newest first."""
    try:
        where = parse_filter(ctx.request.query_params)
    except FieldErrors as exc:
        return JSONResponse({"error": str(exc), "errors": exc.errors}, status_code=422)
    entries, next_before = read_page(ctx, where)
    return JSONResponse(
        {"entries": [entry_json(e) for e in entries], "next_before": next_before},
        headers={"Cache-Control": "no-store"},
    )
