"""How long the agent waits before reconnecting: exponential backoff with full jitter.

Attempt n (0 after a working connection) waits a uniform random time in [0, cap(n)],
cap(n) = min(MAX_DELAY, BASE_DELAY * 2**n): many servers losing one hub at the same
moment do not all come back in the same second ("full jitter", as AWS describes it).
"""

from __future__ import annotations

import random
from typing import Final

BASE_DELAY: Final = 1.0
MAX_DELAY: Final = 60.0
REFUSED_ATTEMPT: Final = 5
"""A hub that refuses our keys (or cannot prove it knows them) is not retried fast: the
schedule jumps to at least this attempt (cap 32 s)."""


def ceiling(attempt: int) -> float:
    """The longest wait of attempt `attempt` (>= 0)."""
    if attempt >= 16:  # 2**16 s is long past MAX_DELAY; keep the float small
        return MAX_DELAY
    return min(MAX_DELAY, BASE_DELAY * float(2 ** max(0, attempt)))


def delay(attempt: int, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt `attempt`: uniform in [0, ceiling(attempt)]."""
    return (rng or random).uniform(0.0, ceiling(attempt))
