"""CPU and memory of process trees and of the host (SPEC 1.9, and 1.4 `max_memory_restart`).

Everything here reads /proc: the daemon's passes call it through `asyncio.to_thread`;
only the re-reading of one stale tree when a client asks runs on the loop (a few small
reads). Processes are read from /proc/<pid>/stat directly (one ~300-byte read gives CPU
times, threads, RSS, parent and start time), not through psutil objects, which cost
several times more. One `TreeSampler` lives as long as the daemon; its cache is pruned
by every pass over all the trees, so it never grows past the processes that exist.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


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


_Key = tuple[int, int]  # (pid, start time in clock ticks): a pid alone may be reused


class _Reading(NamedTuple):
    cpu: float
    rss: int
    threads: int
    fds: int


class _Prev(NamedTuple):
    """A process's CPU time at the last reading: the baseline of the next CPU %."""

    cpu_ticks: int
    at: float


class _Stat(NamedTuple):
    """The fields of /proc/<pid>/stat that sampling uses."""

    ppid: int
    cpu_ticks: int
    """utime + stime."""
    threads: int
    start_ticks: int
    rss_pages: int


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _read_stat(pid: int | str) -> _Stat | None:
    """The process's /proc/<pid>/stat, or None if it is gone, a zombie or unreadable.

    os.open/os.read rather than open(): no buffered file object for a ~300-byte read
    that runs for every process of every app on every pass.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        # The name (field 2) may hold spaces or ')': split after the last ')'.
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":
            return None  # a zombie is gone for our purposes
        return _Stat(
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[17]),
            int(fields[19]),
            int(fields[21]),
        )
    except (ValueError, IndexError):
        return None


def own_rss() -> int:
    """The calling process's RSS in bytes (one small /proc read)."""
    stat = _read_stat("self")
    return stat.rss_pages * _PAGE if stat is not None else 0


def _num_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or another user's process seen by a non-root daemon
        return 0


class TreeSampler:
    """Samples process trees; keeps each process's last CPU time to measure CPU % against.

    Thread-safe: calls are serialised, so two overlapping `to_thread` calls cannot race
    on the cache (the second simply waits for the first).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prev: dict[_Key, _Prev] = {}
        self._members: dict[int, list[_Key]] = {}
        self._fds: dict[_Key, int] = {}
        self._last_cpu: tuple[float, float] | None = None  # (busy, total) seconds

    def sample(
        self,
        roots: list[int],
        *,
        rescan: bool = True,
        count_fds: bool = True,
        prune: bool = True,
        wait: bool = True,
    ) -> dict[int, TreeSample]:
        """Sum each root's tree. Roots that no longer exist are left out of the result.

        `rescan=False` reuses the tree membership found by the last rescan (a scan of every
        process on the host is the expensive part); a root never seen before counts as a
        tree of one until the next rescan. `count_fds=False` reuses the last fd counts.
        The first sample of a process reads 0 % CPU (there is no previous interval yet).

        `prune=True` says `roots` are all the roots there are: what belongs to no other
        tree is forgotten, which bounds the caches. A partial pass (some roots only) must
        pass `prune=False`, or it would lose the other trees' CPU baselines.
        `wait=False` returns {} at once instead of waiting for a pass in another thread.
        """
        if not self._lock.acquire(blocking=wait):
            return {}
        try:
            stats: dict[int, _Stat] = {}
            if rescan:
                members, stats = self._scan(roots)
                if prune:
                    self._members = members
                else:
                    self._members.update(members)
            return self._sample(roots, count_fds, prune, stats)
        finally:
            self._lock.release()

    def _scan(self, roots: list[int]) -> tuple[dict[int, list[_Key]], dict[int, _Stat]]:
        """Every root's tree, and the stat of every process read on the way (the pass
        measures the members from those rather than reading them twice)."""
        # One pass over /proc builds the parent -> children map for every root at once;
        # psutil's children(recursive=True) would rescan every process once per root.
        children: dict[int, list[int]] = {}
        stats: dict[int, _Stat] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            stat = _read_stat(name)
            if stat is None:  # vanished while being read, or a zombie
                continue
            pid = int(name)
            stats[pid] = stat
            children.setdefault(stat.ppid, []).append(pid)
        members = {
            root: [(pid, stats[pid].start_ticks) for pid in _tree(root, children)]
            for root in roots
            if root in stats
        }
        return members, stats

    def _sample(
        self, roots: list[int], count_fds: bool, prune: bool, stats: dict[int, _Stat]
    ) -> dict[int, TreeSample]:
        kept: dict[_Key, _Prev] = {}
        measured: dict[_Key, _Reading | None] = {}
        result: dict[int, TreeSample] = {}
        now = time.monotonic()
        for root in roots:
            members = self._members.get(root) or self._single(root)
            cpu, rss, count, threads, fds = 0.0, 0, 0, 0, 0
            for key in members:
                if key not in measured:  # a pid in two trees is read once
                    measured[key] = self._measure(key, now, kept, count_fds, stats)
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
        if prune:
            # Dropping everything not seen this time bounds the caches to the live trees.
            self._prev = kept
            self._fds = {key: self._fds.get(key, 0) for key in kept}
            self._members = {root: self._members[root] for root in roots if root in self._members}
        else:
            self._prev.update(kept)
        return result

    def _single(self, root: int) -> list[_Key]:
        stat = _read_stat(root)
        return [] if stat is None else [(root, stat.start_ticks)]

    def _measure(
        self,
        key: _Key,
        now: float,
        kept: dict[_Key, _Prev],
        count_fds: bool,
        stats: dict[int, _Stat],
    ) -> _Reading | None:
        """One process's reading, or None if it is gone, unreadable, or its pid now
        belongs to another process (the start time differs)."""
        stat = stats.get(key[0]) or _read_stat(key[0])
        if stat is None or stat.start_ticks != key[1]:
            return None
        prev = self._prev.get(key)
        percent = 0.0
        if prev is not None and now > prev.at:
            used = (stat.cpu_ticks - prev.cpu_ticks) / _TICKS
            percent = max(0.0, 100.0 * used / (now - prev.at))
        if count_fds or key not in self._fds:
            self._fds[key] = _num_fds(key[0])  # a directory listing: not every pass
        kept[key] = _Prev(stat.cpu_ticks, now)
        return _Reading(percent, stat.rss_pages * _PAGE, stat.threads, self._fds[key])

    def host_sample(self) -> HostSample:
        """Load, memory and CPU of the whole host."""
        # Imported on first use, in the first sampling pass's worker thread: ~10 ms that
        # the daemon's start-up (which a cold `corral start` waits for) does not spend.
        import psutil

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
        """How many processes' CPU baselines are kept between calls (for tests)."""
        with self._lock:
            return len(self._prev)


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
