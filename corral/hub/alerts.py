"""Alerts (SPEC 5): crash loop (an app's restarts grow by `threshold` within a window),
memory (an app over `threshold` MiB), silent (a server not heard from for `threshold`
minutes). Each condition opens one `firing` event, later `resolved`; both changes are
shown in the hub and POSTed as JSON to the bucket's webhook URL, if it has one."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import AlertEvent, AlertRule, AppSample, Bucket, Server

log = logging.getLogger("corral.hub.alerts")
KINDS = {"crash_loop": "restarts", "memory": "MiB", "silent": "minutes"}
WEBHOOK_TIMEOUT = 5.0
MAX_URL = 2000


class AlertError(ValueError):
    """A user mistake in an alert rule or the webhook URL."""


def check_webhook_url(text: str) -> str | None:
    if not text:
        return None
    parts = urlsplit(text)
    if len(text) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertError("webhook_url: an http:// or https:// URL (empty: none)")
    return text


def _int(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise AlertError(f"{name}: a whole number, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise AlertError(f"{name}: from {low} to {high}")
    return value


def add_rule(db: DbSession, bucket_id: int, kind: str, threshold: str, window: str) -> int:
    if kind not in KINDS:
        raise AlertError(f"kind: one of {', '.join(KINDS)}")
    rule = AlertRule(
        bucket_id=bucket_id,
        kind=kind,
        threshold=_int(threshold, "threshold", 1, 1_000_000),
        window_seconds=_int(window, "window", 10, 7 * 86400),
    )
    db.add(rule)
    db.flush()
    return rule.id


def remove_rule(db: DbSession, bucket_id: int, rule_id: str) -> bool:
    if not rule_id.isdigit() or len(rule_id) > 18:
        return False
    rule = db.get(AlertRule, int(rule_id))
    if rule is None or rule.bucket_id != bucket_id:
        return False
    db.delete(rule)
    return True


@dataclass(frozen=True)
class Change:
    """An event that fired or resolved, to send to the webhook."""

    event_id: int
    url: str
    payload: dict[str, Any]


def _restart_growth(rows: list[AppSample]) -> int:
    """Restarts gained within the rows (a counter reset counts from zero)."""
    growth, last = 0, None
    for row in rows:
        if last is not None:
            growth += row.restarts - last if row.restarts >= last else row.restarts
        last = row.restarts
    return growth


def _conditions(
    db: DbSession, rule: AlertRule, servers: list[Server], now: float
) -> dict[tuple[int, str | None], str]:
    """(server id, app or None) -> message, for every place the rule's condition holds."""
    out: dict[tuple[int, str | None], str] = {}
    for server in servers:
        if rule.kind == "silent":
            quiet = now - server.last_seen
            if quiet >= rule.threshold * 60:
                out[(server.id, None)] = (
                    f"{server.hostname} silent for {int(quiet // 60)} min "
                    f"(rule: {rule.threshold} min)"
                )
        elif rule.kind == "memory":
            latest = json.loads(server.last_metrics) if server.last_metrics else {"apps": []}
            worst: dict[str, int] = {}
            for app in latest["apps"]:
                if app["memory"] is not None:
                    worst[app["name"]] = max(worst.get(app["name"], 0), app["memory"])
            for name, memory in worst.items():
                if memory > rule.threshold * 1024 * 1024:
                    out[(server.id, name)] = (
                        f"{name} on {server.hostname} uses {memory // (1024 * 1024)} MiB "
                        f"(rule: over {rule.threshold} MiB)"
                    )
        elif rule.kind == "crash_loop":
            rows = db.scalars(
                select(AppSample)
                .where(AppSample.server_id == server.id, AppSample.at >= now - rule.window_seconds)
                .order_by(AppSample.at)
            ).all()
            by_app: dict[tuple[str, int], list[AppSample]] = {}
            for row in rows:
                by_app.setdefault((row.name, row.instance), []).append(row)
            growth: dict[str, int] = {}
            for (name, _), samples in by_app.items():
                growth[name] = growth.get(name, 0) + _restart_growth(samples)
            for name, gained in growth.items():
                if gained >= rule.threshold:
                    out[(server.id, name)] = (
                        f"{name} on {server.hostname} restarted {gained} times in "
                        f"{rule.window_seconds} s (crash loop: {rule.threshold})"
                    )
    return out


def evaluate(db: DbSession, bucket: Bucket, now: float) -> list[Change]:
    """Open and resolve this bucket's alert events; the changes to notify."""
    servers = list(db.scalars(select(Server).where(Server.bucket_id == bucket.id)))
    rules = db.scalars(select(AlertRule).where(AlertRule.bucket_id == bucket.id)).all()
    names = {s.id: s.hostname for s in servers}
    changes: list[AlertEvent] = []
    for rule in rules:
        holding = _conditions(db, rule, servers, now)
        firing = {
            (e.server_id, e.app): e
            for e in db.scalars(
                select(AlertEvent).where(
                    AlertEvent.rule_id == rule.id, AlertEvent.state == "firing"
                )
            )
        }
        for key, message in holding.items():
            if key not in firing:
                event = AlertEvent(
                    bucket_id=bucket.id,
                    rule_id=rule.id,
                    server_id=key[0],
                    app=key[1],
                    state="firing",
                    message=message,
                    started_at=now,
                )
                db.add(event)
                changes.append(event)
        for key, event in firing.items():
            if key not in holding:
                event.state = "resolved"
                event.resolved_at = now
                changes.append(event)
    db.flush()
    if not bucket.webhook_url:
        return []
    out = []
    for event in changes:
        rule = next(r for r in rules if r.id == event.rule_id)
        payload = {
            "bucket": bucket.public_id,
            "bucket_name": bucket.name,
            "kind": rule.kind,
            "state": event.state,
            "hostname": names.get(event.server_id, ""),
            "app": event.app,
            "message": event.message,
            "started_at": event.started_at,
            "resolved_at": event.resolved_at,
        }
        out.append(Change(event.id, bucket.webhook_url, payload))
    return out


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a webhook is POSTed where it was configured, nowhere else


_opener = urllib.request.build_opener(_NoRedirects)


def deliver(change: Change) -> str:
    """POST one change (blocking: run in a thread); the outcome to record."""
    request = urllib.request.Request(
        change.url,
        data=json.dumps(change.payload).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "corral-hub"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=WEBHOOK_TIMEOUT) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        log.warning("alert webhook %s: %s", urlsplit(change.url).hostname, reason)
        return f"failed: {reason}"[:64]


def run_alerts(database: Any, now: float | None = None) -> list[tuple[int, list[Change]]]:
    """Evaluate every bucket; (bucket id, changes to deliver) for each."""
    now = time.time() if now is None else now
    out = []
    with database.session() as db:
        for bucket in db.scalars(select(Bucket)).all():
            out.append((bucket.id, evaluate(db, bucket, now)))
    return out


def deliver_all(database: Any, changes: list[Change]) -> None:
    for change in changes:
        status = deliver(change)
        with database.session() as db:
            event = db.get(AlertEvent, change.event_id)
            if event is not None:
                event.webhook_status = status
