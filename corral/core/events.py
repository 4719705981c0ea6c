"""Fan-out of daemon events (state transitions, log lines) to subscribers.

Each subscriber has a bounded queue: a subscriber that does not keep up loses events
(and is told how many) rather than growing the daemon's memory or slowing anything down.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
SUBSCRIBER_QUEUE = 1000
RECENT_PER_APP = 20


class Subscription:
    def __init__(self, accept: Callable[[Event], bool]) -> None:
        self.accept = accept
        self.queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if not self.accept(event):
            return
        if self.queue.full():
            self.dropped += 1
            return
        if self.dropped:
            self.queue.put_nowait({"type": "dropped", "count": self.dropped})
            self.dropped = 0
            if self.queue.full():
                return
        self.queue.put_nowait(event)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._recent: dict[str, deque[Event]] = {}

    def subscribe(self, accept: Callable[[Event], bool]) -> Subscription:
        sub = Subscription(accept)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        if event.get("type") == "transition":
            name = str(event.get("name"))
            self._recent.setdefault(name, deque(maxlen=RECENT_PER_APP)).append(event)
        for sub in list(self._subscribers):
            sub.offer(event)

    def recent(self, name: str) -> list[Event]:
        return list(self._recent.get(name, ()))

    def forget(self, name: str) -> None:
        self._recent.pop(name, None)
