"""Login throttling per account and per address (SPEC 2.3).

Failures are counted in a sliding window. At the limit the key is locked for 30 s; from
then on every failure locks it for twice as long as the one before (60 s, 120 s, ... up
to 15 min) until a whole window passes after the lock without a failure. A login is not even checked
while its account or address is locked. The per-account limit stops a slow guess at
one password; the per-address limit, higher, stops one client from trying many accounts.
Success clears the account's count but not the address's: an attacker who knows one
password must not be able to reset the counter of the address they guess others from.

State lives in memory (a restart forgets it, which costs an attacker a restart), bounded
in size: the least recently used keys are dropped first.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 15 * 60.0
"""Failures older than this (seconds) are forgotten."""
ACCOUNT_LIMIT = 5
"""Failures per account within WINDOW before it locks."""
ADDRESS_LIMIT = 20
"""Failures per client address within WINDOW before it locks."""
BASE_DELAY = 30.0
"""The first lock; each further failure doubles it."""
MAX_DELAY = 15 * 60.0
MAX_KEYS = 100_000
"""Tracked accounts (and, separately, addresses) at most."""
IPV6_PREFIX = 64
"""IPv6 clients are counted per /64: one host usually holds a whole /64."""


@dataclass
class _Record:
    failures: deque[float]
    """Times of the failures within WINDOW (the last `limit` of them)."""
    last_failure: float = 0.0
    locks: int = 0
    """Locks so far: the next one lasts BASE_DELAY * 2**locks."""
    locked_until: float = 0.0


class _Counter:
    """Failures per key under one limit. Not locked itself: LoginThrottle holds the lock."""

    def __init__(self, limit: int, max_keys: int) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.records: OrderedDict[str, _Record] = OrderedDict()

    def _current(self, key: str, now: float) -> _Record | None:
        record = self.records.get(key)
        if record is None:
            return None
        if max(record.last_failure, record.locked_until) <= now - WINDOW:
            del self.records[key]  # a whole window without failure or lock: start afresh
            return None
        while record.failures and record.failures[0] <= now - WINDOW:
            record.failures.popleft()
        return record

    def wait(self, key: str, now: float) -> float:
        record = self._current(key, now)
        return 0.0 if record is None else max(0.0, record.locked_until - now)

    def fail(self, key: str, now: float) -> None:
        record = self._current(key, now)
        if record is None:
            record = self.records[key] = _Record(deque(maxlen=self.limit))
            while len(self.records) > self.max_keys:
                self.records.popitem(last=False)
        self.records.move_to_end(key)
        record.failures.append(now)
        record.last_failure = now
        # Once locked, every failure until a quiet window has passed locks again, longer.
        if record.locks or len(record.failures) >= self.limit:
            delay = min(BASE_DELAY * 2**record.locks, MAX_DELAY)
            record.locks = min(record.locks + 1, 32)
            record.locked_until = max(record.locked_until, now + delay)

    def clear(self, key: str) -> None:
        self.records.pop(key, None)


def _account_key(account: str) -> str:
    return account.strip().casefold()


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()  # not an IP (a unix socket peer, a test client): as is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class LoginThrottle:
    """Call `retry_after` before checking a password; then record the outcome."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_keys: int = MAX_KEYS
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # sync routes run in a threadpool
        self._accounts = _Counter(ACCOUNT_LIMIT, max_keys)
        self._addresses = _Counter(ADDRESS_LIMIT, max_keys)

    def retry_after(self, account: str, address: str) -> float:
        """0.0 when a login may be tried now, else the seconds to wait."""
        with self._lock:
            now = self._clock()
            return max(
                self._accounts.wait(_account_key(account), now),
                self._addresses.wait(_address_key(address), now),
            )

    def record_failure(self, account: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            self._accounts.fail(_account_key(account), now)
            self._addresses.fail(_address_key(address), now)

    def record_success(self, account: str, address: str) -> None:
        """Clear the account's failures (the address's stay counted)."""
        with self._lock:
            self._accounts.clear(_account_key(account))
