"""Rate limits for the public webhook endpoint, and the memory of GitHub deliveries.

A token bucket per key: `burst` requests at once, then one per `1 / rate` seconds. The
endpoint keeps one limiter per client address and one per hook id (as given in the URL,
known or not: the answer must not tell them apart). State lives in memory, bounded: the
least recently used keys are dropped first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 50_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    refused: bool = False
    """A request was refused since the last one admitted (its refusal was audited)."""


@dataclass(frozen=True)
class Verdict:
    retry_after: float
    """0.0: admitted; else the seconds until the next request would be."""
    first_refusal: bool = False
    """The first refusal of this key since it was last admitted (worth an audit entry; the
    ones after it are not, or a flood would fill the audit log)."""

    @property
    def admitted(self) -> bool:
        return self.retry_after == 0.0

    @property
    def retry_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter:
    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("a rate limit needs burst >= 1 and a positive rate")
        self.burst = burst
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> Verdict:
        """Admit one request of `key` (and count it), or say how long to wait."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
                while len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                bucket.refused = False
                return Verdict(0.0)
            first = not bucket.refused
            bucket.refused = True
            return Verdict((1.0 - bucket.tokens) / self.rate, first)


class DeliveryMemory:
    """GitHub delivery ids seen recently (per hook): a delivery is deployed once only."""

    def __init__(
        self,
        keep_seconds: float = 7 * 24 * 3600,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, hook: str, delivery: str) -> bool:
        """Record the delivery; False when it was seen before (a replay)."""
        with self._lock:
            now = self._clock()
            while self._seen:  # oldest first: drop what is past keeping
                oldest_key, at = next(iter(self._seen.items()))
                if at > now - self.keep_seconds:
                    break
                del self._seen[oldest_key]
            key = (hook, delivery)
            if key in self._seen:
                return False
            self._seen[key] = now
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            return True

    def forget(self, hook: str, delivery: str) -> None:
        """Let a delivery in again (it failed on our side: GitHub may redeliver it)."""
        with self._lock:
            self._seen.pop((hook, delivery), None)
