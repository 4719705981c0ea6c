"""CronSchedule on a real event loop, with a wall clock the tests move by hand."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from corral.core.cron import CronSchedule, validate

EPOCH = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class FakeWall:
    """A wall clock that runs at real speed from a time the test sets, and resets."""

    def __init__(self, t: float) -> None:
        self.set(t)

    def set(self, t: float) -> None:
        self._offset = t - time.monotonic()

    def __call__(self) -> float:
        return self._offset + time.monotonic()


@pytest.fixture
def utc() -> Iterator[None]:
    """Run in UTC, whatever the machine's zone, so expected times are plain numbers."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_validate() -> None:
    assert validate("*/5 * * * *") is None
    assert validate("0 3 * * 1-5") is None
    assert validate("*/10 * * * * *") is None  # seconds first, as PM2 reads six fields
    assert validate("@daily") is None
    for bad in ["", "* * *", "61 * * * *", "a b c d e", "0 0 30 2 *"]:
        error = validate(bad)
        assert error is not None and repr(bad) in error


def test_invalid_expression_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        CronSchedule("nope", asyncio.new_event_loop(), lambda: None)


def test_next_fire_computation(utc: None) -> None:
    loop = asyncio.new_event_loop()
    try:
        wall = FakeWall(EPOCH)
        every5 = CronSchedule("*/5 * * * *", loop, lambda: None, now=wall)
        assert every5.next_fire() == 1_700_000_100.0  # 22:15:00
        seconds = CronSchedule("*/10 * * * * *", loop, lambda: None, now=wall)
        assert seconds.next_fire() == EPOCH + 10  # 22:13:30
        daily = CronSchedule("0 3 * * *", loop, lambda: None, now=wall)
        assert daily.next_fire() == 1_700_017_200.0  # 03:00 the next day
    finally:
        loop.close()


def test_times_are_local(utc: None) -> None:
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    loop = asyncio.new_event_loop()
    try:
        daily = CronSchedule("0 3 * * *", loop, lambda: None, now=FakeWall(EPOCH))
        fire = datetime.fromtimestamp(daily.next_fire())
        assert (fire.hour, fire.minute) == (3, 0)
        assert daily.next_fire() == 1_700_035_200.0  # 03:00 EST is 08:00 UTC
    finally:
        loop.close()


def test_fires_and_reschedules() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        wall = FakeWall(EPOCH - 0.01)  # the first second boundary is 10 ms away
        fired: list[float] = []
        done = asyncio.Event()

        def tick() -> None:
            fired.append(wall())
            if len(fired) == 3:
                done.set()
            # Jump close to the next boundary, so the test does not wait a real second.
            wall.set(schedule.next_fire() - 0.01)

        schedule = CronSchedule("* * * * * *", loop, tick, now=wall)
        schedule.MAX_SLEEP = 0.02  # so that the jumps of the fake clock are seen at once
        schedule.start()
        await asyncio.wait_for(done.wait(), 5)
        schedule.cancel()
        return fired

    fired = asyncio.run(main())
    assert len(fired) == 3
    # Each call happens at or after its second, one second apart on the wall clock.
    assert all(t >= EPOCH + i for i, t in enumerate(fired))
    assert all(t < EPOCH + i + 1 for i, t in enumerate(fired))


def test_cancel_stops_firing() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        wall = FakeWall(EPOCH - 0.01)
        calls = 0

        def tick() -> None:
            nonlocal calls
            calls += 1

        schedule = CronSchedule("* * * * * *", loop, tick, now=wall)
        schedule.start()
        assert schedule.running
        schedule.cancel()
        assert not schedule.running
        wall.set(EPOCH + 5)
        await asyncio.sleep(0.05)
        return calls

    assert asyncio.run(main()) == 0


def test_long_wait_is_capped_and_follows_a_clock_jump(utc: None) -> None:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        wall = FakeWall(EPOCH)
        calls = 0

        def tick() -> None:
            nonlocal calls
            calls += 1

        schedule = CronSchedule("0 0 1 1 *", loop, tick, now=wall)  # once a year
        schedule.MAX_SLEEP = 0.02
        schedule.start()
        handle = schedule._handle
        assert handle is not None
        capped_delay = handle.when() - loop.time()

        # The machine slept through New Year: the next wake-up notices and fires once.
        wall.set(schedule.next_fire() + 3600)
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # several more wake-ups: still only one call
        schedule.cancel()
        return capped_delay, calls

    capped_delay, calls = asyncio.run(main())
    assert capped_delay <= 0.02
    assert calls == 1


def test_clock_set_back_brings_next_fire_earlier(utc: None) -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        wall = FakeWall(EPOCH)
        schedule = CronSchedule("0 * * * *", loop, lambda: None, now=wall)  # hourly
        schedule.MAX_SLEEP = 0.01
        schedule.start()
        before = schedule.next_fire()
        wall.set(EPOCH - 2 * 3600)
        await asyncio.sleep(0.1)
        schedule.cancel()
        return before, schedule.next_fire()

    before, after = asyncio.run(main())
    assert before == 1_700_002_800.0  # 23:00
    assert after == before - 2 * 3600


def test_failing_callback_keeps_the_schedule() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        wall = FakeWall(EPOCH - 0.01)
        calls = 0
        done = asyncio.Event()

        def tick() -> None:
            nonlocal calls
            calls += 1
            wall.set(schedule.next_fire() - 0.01)
            if calls == 2:
                done.set()
            raise RuntimeError("boom")

        schedule = CronSchedule("* * * * * *", loop, tick, now=wall)
        schedule.MAX_SLEEP = 0.02  # so that the jumps of the fake clock are seen at once
        schedule.start()
        await asyncio.wait_for(done.wait(), 5)
        schedule.cancel()
        return calls

    assert asyncio.run(main()) == 2
