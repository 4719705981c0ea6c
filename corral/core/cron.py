"""`cron_restart` (SPEC 1.4): call back at the times a cron expression names.

Expressions have 5 fields (minute hour day month weekday), or 6 with seconds *first*
(`*/10 * * * * *`), as PM2's cron library reads them; a 7th field is the year. Times are
the daemon's local time.

The timer runs on the event loop's monotonic clock but the schedule is wall-clock, and the
two drift apart when the clock is set or the machine sleeps. So a wait is never longer
than `MAX_SLEEP`: on every wake-up the next time is recomputed from the wall clock. Missed
times (after a suspend) fire once, not once per missed time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI validates configs through this module: it needs no asyncio
    import asyncio

log = logging.getLogger(__name__)


def validate(expr: str) -> str | None:
    """None if `expr` is a usable cron expression, else what is wrong with it."""
    try:
        _next_after(expr, time.time())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # croniter's errors are ValueErrors; odd input can raise the others.
        return f"invalid cron expression {expr!r}: {exc}"
    return None


def _next_after(expr: str, now: float) -> float:
    """The first time strictly after `now` that matches `expr`, in epoch seconds."""
    # Imported here: croniter costs 16 ms at start-up, and most configs have no cron.
    from croniter import croniter

    # An aware local datetime makes croniter work in local time (a float means UTC).
    start = datetime.fromtimestamp(now).astimezone()
    it = croniter(expr, start, second_at_beginning=True)
    return float(it.get_next(float))


class CronSchedule:
    MAX_SLEEP = 300.0
    """Longest single wait, in seconds, before the wall clock is read again."""

    def __init__(
        self,
        expr: str,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        now: Callable[[], float] = time.time,
    ) -> None:
        error = validate(expr)
        if error is not None:
            raise ValueError(error)
        self.expr = expr
        self._loop = loop
        self._callback = callback
        self._now = now
        self._next = _next_after(expr, now())
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Arm the timer (again, from the current time, if it was cancelled)."""
        self.cancel()
        self._next = _next_after(self.expr, self._now())
        self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def next_fire(self) -> float:
        """The next time the callback is due, in epoch seconds."""
        return self._next

    def _arm(self) -> None:
        delay = min(max(self._next - self._now(), 0.0), self.MAX_SLEEP)
        self._handle = self._loop.call_later(delay, self._wake)

    def _wake(self) -> None:
        now = self._now()
        due = now >= self._next
        # Recomputing from `now` also follows a clock set backwards; while the time has
        # not come yet it gives the same `_next` again.
        self._next = _next_after(self.expr, now)
        self._arm()  # before the callback, so a failing callback cannot stop the schedule
        if due:
            try:
                self._callback()
            except Exception:
                log.exception("cron callback for %r failed", self.expr)
