"""`Hub`: what routes and the agent endpoint share (config, database, keys, live links)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from corral.hub.agents import Links
from corral.hub.buckets import bucket_keys
from corral.hub.config import HubConfig
from corral.hub.db.engine import Database
from corral.hub.db.models import Action
from corral.hub.ingest import record_result
from corral.hub.sealing import Sealer
from corral.hub.templating import Templates
from corral.panel.security.origin import own_origin
from corral.panel.security.throttle import LoginThrottle
from corral.protocol.hub import BucketKeys

T = TypeVar("T")
log = logging.getLogger("corral.hub")


class Notifier:
    """Wakes the browsers' live streams of a bucket when its data changed (coalesced)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[int, set[asyncio.Queue[None]]] = {}

    def subscribe(self, bucket_id: int) -> asyncio.Queue[None]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        with self._lock:
            self._queues.setdefault(bucket_id, set()).add(queue)
        return queue

    def unsubscribe(self, bucket_id: int, queue: asyncio.Queue[None]) -> None:
        with self._lock:
            self._queues.get(bucket_id, set()).discard(queue)

    def notify(self, bucket_id: int) -> None:
        """On the event loop only (the agent endpoint, the alert task)."""
        with self._lock:
            queues = list(self._queues.get(bucket_id, ()))
        for queue in queues:
            if queue.empty():
                queue.put_nowait(None)


class Hub:
    def __init__(
        self, config: HubConfig, database: Database, sealer: Sealer, templates: Templates
    ) -> None:
        self.config = config
        self.database = database
        self.sealer = sealer
        self.templates = templates
        self.links = Links()
        self.notifier = Notifier()
        self.throttle = LoginThrottle()
        self.handshakes = LoginThrottle()
        """Failed agent handshakes, per (public id, address) and per address: a secret
        cannot be guessed fast (the lookup and key work is not even done while locked)."""
        self.cookie_name = "__Host-corral_hub" if config.tls else "corral_hub"

    def origin_of(self, connection: HTTPConnection) -> str:
        host = connection.headers.get("host")
        return own_origin(connection.url.scheme, host, self.config.public_origin) or ""

    # -- agents (sync: run in a thread)

    def bucket_keys(self, public_id: str) -> tuple[int, BucketKeys] | None:
        with self.database.session() as db:
            return bucket_keys(db, self.sealer, public_id)

    def ingest(self, fn: Callable[..., T], *args: Any) -> T:
        with self.database.session() as db:
            return fn(db, *args, time.time())

    def ingest_result(self, bucket_id: int, server_pk: int, body: dict[str, Any]) -> None:
        with self.database.session() as db:
            record_result(db, bucket_id, server_pk, body)
            action = db.get(Action, body["id"])
        # Logged on the hub's side too: id, verb, target, who asked, outcome (never args).
        if action is not None and action.bucket_id == bucket_id:
            log.info(
                "action %s %s %s by %s on %s: %s%s",
                action.id,
                action.verb,
                action.target,
                action.requested_by,
                action.hostname,
                "ok" if body["ok"] else "refused",
                f" ({body['code']})" if body["code"] else "",
            )

    def notify(self, bucket_id: int) -> None:
        self.notifier.notify(bucket_id)
