"""CPU and memory of process trees and of the host (SPEC 1.9, and 1.4 `max_memory_restart`).

Everything here is blocking (it reads /proc): the daemon calls it through
`asyncio.to_thread`. One `TreeSampler` lives as long as the daemon, so its cache is
pruned on every call and never grows past the processes that currently exist.
"""

from __future__ import annotations

import os
import threading
import time
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


class _Prev(NamedTuple):
    """A process's CPU time at the last pass: the baseline of the next CPU %."""

    cpu_seconds: float
    at: float
    start_ticks: int


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _read_stat(pid: int) -> tuple[float, int, int, int] | None:
    """(utime + stime in seconds, threads, rss bytes, start time in ticks) of `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        # The name (field 2) may hold spaces or ')': split after the last ')'.
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":
            return None  # a zombie is gone for our purposes
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS
        return cpu, int(fields[17]), int(fields[21]) * _PAGE, int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _same_start(key: _Key) -> bool:
    """The pid still is the process of `key` (its psutil create_time): a first reading
    must not be taken from a process that reused the pid since the scan."""
    try:
        return abs(psutil.Process(key[0]).create_time() - key[1]) < 0.05
    except _GONE:
        return False


def _num_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or another user's process seen by a non-root daemon
        return 0


class TreeSampler:
    """Samples process trees; keeps the psutil objects that CPU % is measured against.

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
        self, roots: list[int], *, rescan: bool = True, count_fds: bool = True
    ) -> dict[int, TreeSample]:
        """Sum each root's tree. Roots that no longer exist are left out of the result.

        `rescan=False` reuses the tree membership found by the last rescan (a scan of every
        process on the host is the expensive part); a root never seen before counts as a
        tree of one until the next rescan. `count_fds=False` reuses the last fd counts.
        The first sample of a process reads 0 % CPU (there is no previous interval yet).
        """
        with self._lock:
            if rescan:
                self._members = self._scan(roots)
            return self._sample(roots, count_fds)

    def _scan(self, roots: list[int]) -> dict[int, list[_Key]]:
        # One pass over /proc builds the parent -> children map for every root at once;
        # psutil's children(recursive=True) would rescan every process once per root.
        children: dict[int, list[int]] = {}
        created: dict[int, float] = {}
        for proc in psutil.process_iter(["ppid", "create_time"]):
            info = proc.info
            ppid, ctime = info.get("ppid"), info.get("create_time")
            if ppid is None or ctime is None:  # vanished while being read
                continue
            created[proc.pid] = ctime
            children.setdefault(ppid, []).append(proc.pid)
        return {
            root: [(pid, created[pid]) for pid in _tree(root, children)]
            for root in roots
            if root in created
        }

    def _sample(self, roots: list[int], count_fds: bool) -> dict[int, TreeSample]:
        kept: dict[_Key, _Prev] = {}
        measured: dict[_Key, _Reading | None] = {}
        result: dict[int, TreeSample] = {}
        for root in roots:
            members = self._members.get(root) or self._single(root)
            cpu, rss, count, threads, fds = 0.0, 0, 0, 0, 0
            for key in members:
                if key not in measured:  # a pid in two trees is read once
                    measured[key] = self._measure(key, kept, count_fds)
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
        # Dropping everything not seen this time bounds the caches to the live trees.
        self._prev = kept
        self._fds = {key: self._fds.get(key, 0) for key in kept}
        return result

    def _single(self, root: int) -> list[_Key]:
        try:
            return [(root, psutil.Process(root).create_time())]
        except _GONE:
            return []

    def _measure(self, key: _Key, kept: dict[_Key, _Prev], count_fds: bool) -> _Reading | None:
        """One process's reading, or None if it is gone or unreadable.

        Read from /proc/<pid>/stat directly rather than through psutil: one file gives the
        CPU times, threads, RSS and start time, and this runs for every process of every
        app every couple of seconds (psutil's three reads per process cost ~10x more).
        """
        stat = _read_stat(key[0])
        if stat is None:
            return None
        cpu_seconds, threads, rss, start_ticks = stat
        now = time.monotonic()
        prev = self._prev.get(key)
        if prev is not None and prev.start_ticks != start_ticks:
            return None  # the pid was reused by another process since the last pass
        if prev is None and not _same_start(key):
            return None
        percent = 0.0
        if prev is not None and now > prev.at:
            percent = max(0.0, 100.0 * (cpu_seconds - prev.cpu_seconds) / (now - prev.at))
        if count_fds or key not in self._fds:
            self._fds[key] = _num_fds(key[0])  # a directory listing: not every pass
        kept[key] = _Prev(cpu_seconds, now, start_ticks)
        return _Reading(percent, rss, threads, self._fds[key])

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
