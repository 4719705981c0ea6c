"""A hand-driven `OsApi`: the test decides when a spawn completes and when a process exits."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.core.osapi import Child, ExitStatus, LaunchSpec, OutputSink


class NullOutput:
    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        pass


@dataclass
class FakeProcess:
    spec: LaunchSpec
    on_spawned: Callable[[Child], None]
    on_failed: Callable[[str], None]
    on_exit: Callable[[ExitStatus], None]
    child: Child | None = None
    signals: list[int] = field(default_factory=list)
    exited: bool = False
    group_leftovers: bool = False


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeOs:
    def __init__(self) -> None:
        self.clock = 1000.0
        self.processes: list[FakeProcess] = []
        self._timers: list[tuple[float, int, FakeTimer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._pids = itertools.count(100)
        self.pending_clears: list[Callable[[], None]] = []

    # OsApi
    def now(self) -> float:
        return self.clock

    def wall(self) -> float:
        return 1_700_000_000.0 + self.clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (self.clock + delay, next(self._seq), timer, callback))
        return timer

    def spawn(
        self,
        spec: LaunchSpec,
        output: OutputSink,
        on_spawned: Callable[[Child], None],
        on_failed: Callable[[str], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> None:
        self.processes.append(FakeProcess(spec, on_spawned, on_failed, on_exit))

    def signal_group(self, child: Child, signum: int) -> None:
        self._by_child(child).signals.append(signum)

    def signal_process(self, child: Child, signum: int) -> None:
        self._by_child(child).signals.append(signum)

    def clear_group(
        self, child: Child, signum: int | None, timeout: float, done: Callable[[], None]
    ) -> None:
        proc = self._by_child(child)
        if proc.group_leftovers:
            self.pending_clears.append(done)
        else:
            done()

    # Driving
    @property
    def last(self) -> FakeProcess:
        return self.processes[-1]

    def complete_spawn(self, proc: FakeProcess | None = None) -> Child:
        proc = proc or self.last
        proc.child = Child(next(self._pids), self.clock)
        proc.on_spawned(proc.child)
        return proc.child

    def fail_spawn(self, message: str = "no such file") -> None:
        self.last.on_failed(message)

    def exit(
        self, code: int | None = 0, signal: int | None = None, proc: FakeProcess | None = None
    ) -> None:
        proc = proc or self.last
        proc.exited = True
        proc.on_exit(ExitStatus(code=None if signal is not None else code, signal=signal))

    def advance(self, seconds: float) -> None:
        target = self.clock + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback = heapq.heappop(self._timers)
            self.clock = when
            if not timer.cancelled:
                callback()
        self.clock = target

    def _by_child(self, child: Child) -> FakeProcess:
        for proc in self.processes:
            if proc.child == child:
                return proc
        raise AssertionError(f"unknown child {child}")
