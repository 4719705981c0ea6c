"""CPU and memory of process trees and of the host (SPEC 1.9, and 1.4 `max_memory_restart`).

Everything here is blocking (it reads /proc): the daemon calls it through
`asyncio.to_thread`. One `TreeSampler` lives as long as the daemon, so its cache is
pruned on every call and never grows past the processes that currently exist.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import psutil

# What psutil raises when a process vanishes or hides between listing and reading it.
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@dataclass(frozen=True)
class TreeSample:
    """One process tree (a root and all its descendants), summed."""

    cpu_percent: float
    """Over the interval since the previous `sample` call; 100 means one full core."""
    rss: int
    """Bytes. Pages shared between members are counted once per member, as `ps` does."""
    processes: int
    threads: int = 0
    fds: int = 0
    """Open file descriptors of the whole tree."""


@dataclass(frozen=True)
class HostSample:
    load1: float
    load5: float
    load15: float
    mem_total: int
    mem_available: int
    swap_used: int
    cpu_count: int
    cpu_percent: float
    """Whole host, 0-100, over the interval since the previous `host_sample` call."""


_Key = tuple[int, float]  # (pid, create_time): a pid alone may be reused by another process


class _Reading(NamedTuple):
    cpu: float
    rss: int
    threads: int
    fds: int


def _num_fds(proc: psutil.Process) -> int:
    try:
        return proc.num_fds()
    except psutil.AccessDenied:  # another user's process, seen by a non-root daemon
        return 0


class TreeSampler:
    """Samples process trees; keeps the psutil objects that CPU % is measured against.

    Thread-safe: calls are serialised, so two overlapping `to_thread` calls cannot race
    on the cache (the second simply waits for the first).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[_Key, psutil.Process] = {}
        self._last_cpu: tuple[float, float] | None = None  # (busy, total) seconds

    def sample(self, roots: list[int]) -> dict[int, TreeSample]:
        """Sum each root's tree. Roots that no longer exist are left out of the result.

        The first sample of a process reads 0 % CPU (there is no previous interval yet).
        """
        with self._lock:
            return self._sample(roots)

    def _sample(self, roots: list[int]) -> dict[int, TreeSample]:
        # One pass over /proc builds the parent -> children map for every root at once;
        # psutil's children(recursive=True) would rescan every process once per root.
        children: dict[int, list[int]] = {}
        listed: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["ppid", "create_time"]):
            info = proc.info
            ppid, ctime = info.get("ppid"), info.get("create_time")
            if ppid is None or ctime is None:  # vanished while being read
                continue
            listed[proc.pid] = proc
            children.setdefault(ppid, []).append(proc.pid)

        kept: dict[_Key, psutil.Process] = {}
        measured: dict[_Key, _Reading | None] = {}
        result: dict[int, TreeSample] = {}
        for root in roots:
            if root not in listed:
                continue
            cpu, rss, count, threads, fds = 0.0, 0, 0, 0, 0
            for pid in _tree(root, children):
                key = (pid, listed[pid].info["create_time"])
                if key not in measured:  # a pid in two trees is read once
                    measured[key] = self._measure(key, kept)
                reading = measured[key]
                if reading is not None:
                    cpu += reading.cpu
                    rss += reading.rss
                    threads += reading.threads
                    fds += reading.fds
                    count += 1
            if count:
                result[root] = TreeSample(
                    cpu_percent=cpu, rss=rss, processes=count, threads=threads, fds=fds
                )
        # Dropping everything not seen this time bounds the cache to the live trees.
        self._procs = kept
        return result

    def _measure(self, key: _Key, kept: dict[_Key, psutil.Process]) -> _Reading | None:
        """One process's reading, or None if it is gone or unreadable."""
        try:
            proc = self._procs.get(key)
            if proc is None:
                # Our own object, not process_iter's shared one, so that nobody else's
                # cpu_percent() calls move our baseline.
                proc = psutil.Process(key[0])
                if proc.create_time() != key[1]:  # the pid was reused in between
                    return None
            with proc.oneshot():
                reading = _Reading(
                    proc.cpu_percent(interval=None),
                    proc.memory_info().rss,
                    proc.num_threads(),
                    _num_fds(proc),
                )
        except _GONE:
            return None
        # Kept only once read successfully, so the cache holds live processes only.
        kept[key] = proc
        return reading

    def host_sample(self) -> HostSample:
        """Load, memory and CPU of the whole host."""
        with self._lock:
            # Computed here rather than with psutil.cpu_percent(), whose baseline is kept
            # per calling thread: to_thread calls land on arbitrary pool threads.
            times = psutil.cpu_times()
            total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
            busy = total - times.idle - getattr(times, "iowait", 0.0)
            cpu = 0.0
            if self._last_cpu is not None:
                d_busy, d_total = busy - self._last_cpu[0], total - self._last_cpu[1]
                if d_total > 0:
                    cpu = min(100.0, max(0.0, 100.0 * d_busy / d_total))
            self._last_cpu = (busy, total)
        load1, load5, load15 = os.getloadavg()
        mem = psutil.virtual_memory()
        return HostSample(
            load1=load1,
            load5=load5,
            load15=load15,
            mem_total=mem.total,
            mem_available=mem.available,
            swap_used=psutil.swap_memory().used,
            cpu_count=psutil.cpu_count() or 1,
            cpu_percent=cpu,
        )

    def cached(self) -> int:
        """How many process objects are kept between calls (for tests and `describe`)."""
        with self._lock:
            return len(self._procs)


def _tree(root: int, children: dict[int, list[int]]) -> Iterable[int]:
    """The root and its descendants. `seen` guards against a cycle from pid reuse."""
    seen = {root}
    stack = [root]
    while stack:
        pid = stack.pop()
        yield pid
        for child in children.get(pid, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
