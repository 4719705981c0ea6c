"""StateWaiters: a waiter is settled by its own instances' transitions, all at one moment."""

from __future__ import annotations

import asyncio

from corral.core.lifecycle import State
from corral.core.waiters import StateWaiters

STARTED = frozenset({State.ONLINE, State.ERRORED})


class Inst:
    """What the waiters look at: a state (the lifecycle reports its changes)."""

    def __init__(self, state: State = State.LAUNCHING) -> None:
        self.state = state


def _move(waiters: StateWaiters, inst: Inst, state: State) -> None:
    inst.state = state
    waiters.changed(inst)  # type: ignore[arg-type]


async def _settled(task: asyncio.Task[None]) -> bool:
    for _ in range(3):
        await asyncio.sleep(0)
    return task.done()


def test_returns_at_once_when_every_instance_is_there_already() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        await asyncio.wait_for(waiters.wait([Inst(State.ONLINE)], STARTED, 60), 1)  # type: ignore[list-item]

    asyncio.run(main())


def test_settles_when_the_last_instance_arrives_and_forgets_the_waiter() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        a, b = Inst(), Inst()
        task = asyncio.ensure_future(waiters.wait([a, b], STARTED, 60))  # type: ignore[list-item]
        assert not await _settled(task)
        _move(waiters, a, State.ONLINE)
        assert not await _settled(task)  # b is still launching
        _move(waiters, b, State.ERRORED)
        assert await _settled(task)
        assert waiters._by_instance == {}

    asyncio.run(main())


def test_an_instance_that_leaves_the_states_again_is_waited_for_again() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        a, b = Inst(), Inst()
        task = asyncio.ensure_future(waiters.wait([a, b], STARTED, 60))  # type: ignore[list-item]
        _move(waiters, a, State.ONLINE)
        _move(waiters, a, State.LAUNCHING)  # crashed and relaunching
        _move(waiters, b, State.ONLINE)
        assert not await _settled(task)
        _move(waiters, a, State.ONLINE)
        assert await _settled(task)

    asyncio.run(main())


def test_other_instances_do_not_settle_a_waiter() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        mine, other = Inst(), Inst()
        task = asyncio.ensure_future(waiters.wait([mine], STARTED, 60))  # type: ignore[list-item]
        _move(waiters, other, State.ONLINE)
        assert not await _settled(task)
        task.cancel()

    asyncio.run(main())


def test_a_timeout_returns_quietly_and_cleans_up() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        a = Inst()
        await waiters.wait([a], STARTED, 0.01)  # type: ignore[list-item]
        assert a.state is State.LAUNCHING
        assert waiters._by_instance == {}

    asyncio.run(main())


def test_many_waiters_on_one_instance_are_all_settled() -> None:
    async def main() -> None:
        waiters = StateWaiters(asyncio.get_running_loop())
        shared, extra = Inst(), Inst()
        first = asyncio.ensure_future(waiters.wait([shared], STARTED, 60))  # type: ignore[list-item]
        both = asyncio.ensure_future(waiters.wait([shared, extra], STARTED, 60))  # type: ignore[list-item]
        _move(waiters, shared, State.ONLINE)
        assert await _settled(first)
        assert not await _settled(both)
        _move(waiters, extra, State.ONLINE)
        assert await _settled(both)
        assert waiters._by_instance == {}

    asyncio.run(main())
