"""The bounded queue of metric pushes waiting for the hub.

While the hub is away samples keep coming; past `limit` the oldest is dropped (and
counted, shown by `corral link --info`), so the daemon's memory stays flat however long
the hub is gone. A push leaves the queue only once it was handed to the WebSocket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

DEFAULT_LIMIT: Final = 720
"""An hour of pushes at the default 5 s interval (`corral set agent.queue N`)."""


class PushQueue:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("a push queue holds at least one push")
        self.limit = limit
        self._items: deque[dict[str, Any]] = deque()
        self.dropped = 0
        """Pushes dropped (oldest first) because the queue was full."""
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, body: dict[str, Any]) -> None:
        while len(self._items) >= max(1, self.limit):
            self._items.popleft()
            self.dropped += 1
        self._items.append(body)
        self._ready.set()

    def peek(self) -> dict[str, Any] | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        """Remove the oldest push (after it was sent)."""
        if self._items:
            self._items.popleft()
        if not self._items:
            self._ready.clear()

    async def wait(self) -> None:
        """Until the queue holds a push."""
        if not self._items:
            self._ready.clear()
            await self._ready.wait()

    def clear(self) -> None:
        self._items.clear()
        self._ready.clear()
