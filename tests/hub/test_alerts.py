"""Alerts (crash loop, memory, silent server) shown in the hub and POSTed to the bucket's
webhook (a loopback receiver); retention pruning. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from corral.hub import ingest, views
from corral.hub.alerts import add_rule, deliver_all, run_alerts
from corral.hub.background import prune
from corral.hub.db.models import AlertEvent, AppSample, Bucket, Server, ServerSample
from corral.hub.services import Hub
from tests.hub.support import add_bucket, add_user, app_body, make_hub, metrics_body


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server keeping every JSON body POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _hello(server_id: str, hostname: str) -> dict[str, Any]:
    return {
        "agent_version": "t",
        "server_id": server_id,
        "hostname": hostname,
        "remote_actions": True,
        "password": None,
    }


def _push(hub: Hub, pk: int, at: float, **app: Any) -> None:
    with hub.database.session() as db:
        ingest.record_metrics(db, pk, metrics_body("web-1", [app_body("api", **app)]), at)


def _round(hub: Hub, now: float) -> None:
    for _, changes in run_alerts(hub.database, now):
        deliver_all(hub.database, changes)


def _events(hub: Hub) -> list[tuple[str, str | None, str]]:
    with hub.database.session() as db:
        rows = db.execute(
            select(AlertEvent.state, AlertEvent.app, AlertEvent.webhook_status).order_by(
                AlertEvent.id
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_alerts_fire_resolve_and_reach_the_webhook(tmp_path: Path, database_url: str) -> None:
    _, hub = make_hub(tmp_path, database_url)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    other = add_bucket(hub, "quiet", "olive")  # no webhook, no rules: nothing for it
    now = time.time()
    with hub.database.session() as db:
        crash = add_rule(db, bucket.id, "crash_loop", "5", "300")
        add_rule(db, bucket.id, "memory", "100", "300")
        add_rule(db, bucket.id, "silent", "2", "300")
        pk = ingest.record_hello(db, bucket.id, _hello("a" * 32, "web-1"), now - 200)
        ingest.record_hello(db, other.id, _hello("b" * 32, "web-2"), now - 10_000)
    with receiver() as (url, received):
        with hub.database.session() as db:
            db.get(Bucket, bucket.id).webhook_url = url  # type: ignore[union-attr]
        # Restarts 0 -> 6 within the window, memory 150 MiB: crash loop and memory fire.
        for i, restarts in enumerate((0, 2, 4, 6)):
            _push(hub, pk, now - 100 + i * 10, restarts=restarts, memory=150 << 20)
        _round(hub, now)
        assert sorted(_events(hub)) == [("firing", "api", "HTTP 204")] * 2
        assert {r["kind"] for r in received} == {"crash_loop", "memory"}
        assert all(r["bucket"] == bucket.public_id and r["state"] == "firing" for r in received)
        assert all(r["hostname"] == "web-1" for r in received)
        _round(hub, now + 1)  # still true: no new event, nothing sent again
        assert len(received) == 2
        # Memory back down, restarts flat for the whole window; then silence.
        _push(hub, pk, now + 400, restarts=6, memory=10 << 20)
        _round(hub, now + 401)
        assert [r["state"] for r in received[2:]] == ["resolved", "resolved"]
        _round(hub, now + 400 + 3 * 60)
        assert received[-1]["kind"] == "silent" and received[-1]["state"] == "firing"
        assert received[-1]["app"] is None
    with hub.database.session() as db:
        assert db.scalar(select(func.count()).select_from(AlertEvent)) == 3
        events = db.scalars(select(AlertEvent).where(AlertEvent.rule_id == crash)).all()
        assert [e.state for e in events] == ["resolved"]
        assert (
            db.scalar(
                select(func.count()).select_from(AlertEvent).where(AlertEvent.bucket_id == other.id)
            )
            == 0
        )
        shown = views.alerts(db, bucket.id)["events"]
        assert shown[0]["message"].startswith("web-1 silent for 3 min")
        assert views.alerts(db, other.id)["events"] == []


def test_webhook_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    _, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    with receiver() as (url, _):
        dead = url  # the receiver is gone after this block: connection refused
    now = time.time()
    with hub.database.session() as db:
        db.get(Bucket, bucket.id).webhook_url = dead  # type: ignore[union-attr]
        add_rule(db, bucket.id, "silent", "1", "300")
        ingest.record_hello(db, bucket.id, _hello("c" * 32, "web-3"), now - 600)
    _round(hub, now)
    [(state, _, status)] = _events(hub)
    assert state == "firing" and status.startswith("failed")


def test_prune_keeps_each_bucket_retention(tmp_path: Path, database_url: str) -> None:
    _, hub = make_hub(tmp_path, database_url)
    add_user(hub, "olive")
    short = add_bucket(hub, "short", "olive")
    long = add_bucket(hub, "long", "olive")
    now = time.time()
    with hub.database.session() as db:
        db.get(Bucket, short.id).retention_days = 1  # type: ignore[union-attr]
        a = ingest.record_hello(db, short.id, _hello("d" * 32, "s"), now)
        b = ingest.record_hello(db, long.id, _hello("e" * 32, "l"), now)
    for pk in (a, b):
        for age_days in (0, 2, 8):
            _push(hub, pk, now - age_days * 86400)
    assert prune(hub.database, now) == 6  # short: 2 days and 8 days; long (7): 8 days
    with hub.database.session() as db:

        def left(model: type[ServerSample] | type[AppSample], pk: int) -> int:
            query = select(func.count()).select_from(model).where(model.server_id == pk)
            return int(db.scalar(query) or 0)

        assert (left(ServerSample, a), left(AppSample, a)) == (1, 1)
        assert (left(ServerSample, b), left(AppSample, b)) == (2, 2)
        assert db.scalar(select(func.count()).select_from(Server)) == 2
