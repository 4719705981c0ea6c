"""Waiting for instances to reach a set of states, woken only by their own transitions.

`start` of 100 apps has 100 operations waiting at once, and each launch makes several
transitions. A single "something changed" event woke every waiter on every transition,
and each re-checked all of its instances and re-armed a timer: quadratic work on the
event loop while it is busiest. Here a transition touches only the waiters of that one
instance, in O(1) each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.core.lifecycle import Instance, State


class _Waiter:
    __slots__ = ("future", "pending", "states")

    def __init__(
        self, pending: set[Instance], states: frozenset[State], future: asyncio.Future[None]
    ) -> None:
        self.pending = pending
        self.states = states
        self.future = future


class StateWaiters:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._by_instance: dict[Instance, list[_Waiter]] = {}

    async def wait(
        self, instances: Iterable[Instance], states: frozenset[State], timeout: float
    ) -> None:
        """Until every instance is in one of `states` at once, or `timeout` passes."""
        watched = set(instances)
        pending = {inst for inst in watched if inst.state not in states}
        if not pending:
            return
        waiter = _Waiter(pending, states, self._loop.create_future())
        for inst in watched:
            self._by_instance.setdefault(inst, []).append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            return
        finally:
            for inst in watched:
                waiters = self._by_instance.get(inst)
                if waiters is not None:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._by_instance[inst]

    def changed(self, inst: Instance) -> None:
        """`inst` has a new state: settle the waiters it was the last one pending for.

        An instance that leaves the states again (a crash right after its launch) is
        pending again, as the waiter asks for all of them at one moment."""
        for waiter in self._by_instance.get(inst, ()):
            if waiter.future.done():
                continue
            if inst.state in waiter.states:
                waiter.pending.discard(inst)
                if not waiter.pending:
                    waiter.future.set_result(None)
            else:
                waiter.pending.add(inst)
