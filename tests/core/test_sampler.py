"""TreeSampler and host_sample against real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from corral.core.sampler import HostSample, TreeSampler, own_rss

BURN = "print('ready', flush=True)\nwhile True: pass"
ALLOCATE = """
import time
block = bytearray(100 * 1024 * 1024)
for i in range(0, len(block), 4096):  # touch every page so it is really resident
    block[i] = 1
print('ready', flush=True)
time.sleep(60)
"""
# A leader with two children, all in one tree: 3 processes.
TREE = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
print('ready', flush=True)
time.sleep(60)
"""


Spawn = Callable[[str], "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts `python -c code` in its own group, waits for 'ready'; kills every group after."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:  # once reaped, its pid (and group id) may be someone else's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_busy_child_cpu_matches_the_cpu_time_it_really_used(spawn: Spawn) -> None:
    """Compared with the child's own CPU time, not with 100 %: on a loaded 2-core CI
    machine a burning child may get much less than a whole core."""
    proc = spawn(BURN)
    child = psutil.Process(proc.pid)
    sampler = TreeSampler()
    first = sampler.sample([proc.pid])[proc.pid]
    assert first.processes == 1
    used_before, started = sum(child.cpu_times()[:2]), time.monotonic()
    time.sleep(1.0)
    second = sampler.sample([proc.pid])[proc.pid]
    used_after, ended = sum(child.cpu_times()[:2]), time.monotonic()
    expected = 100.0 * (used_after - used_before) / (ended - started)
    assert expected > 10.0  # the child did burn
    assert abs(second.cpu_percent - expected) < 20.0


def test_rss_counts_touched_memory(spawn: Spawn) -> None:
    proc = spawn(ALLOCATE)
    sample = TreeSampler().sample([proc.pid])[proc.pid]
    assert sample.rss >= 90 * 1024 * 1024


def test_tree_sums_root_and_descendants(spawn: Spawn) -> None:
    proc = spawn(TREE)
    sampler = TreeSampler()
    sample = sampler.sample([proc.pid])[proc.pid]
    assert sample.processes == 3
    # Every member's memory is counted: more than the leader's alone.
    leader = psutil.Process(proc.pid).memory_info().rss
    assert sample.rss > leader


def test_several_roots_in_one_call(spawn: Spawn) -> None:
    tree = spawn(TREE)
    single = spawn(ALLOCATE)
    samples = TreeSampler().sample([tree.pid, single.pid])
    assert samples[tree.pid].processes == 3
    assert samples[single.pid].processes == 1


def test_gone_root_is_left_out_and_cache_is_pruned(spawn: Spawn) -> None:
    tree = spawn(TREE)
    sampler = TreeSampler()
    assert sampler.sample([tree.pid])[tree.pid].processes == 3
    assert sampler.cached() == 3

    os.killpg(tree.pid, signal.SIGKILL)
    tree.wait()
    # The children may linger as zombies for a moment until init reaps them.
    _wait_for(lambda: sampler.sample([tree.pid]) == {}, "the tree to disappear")
    assert sampler.cached() == 0


def test_missing_pid_is_not_an_error() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert TreeSampler().sample([dead.pid]) == {}


def test_host_sample() -> None:
    sampler = TreeSampler()
    first = sampler.host_sample()
    assert isinstance(first, HostSample)
    assert first.cpu_count >= 1
    assert 0 < first.mem_available <= first.mem_total
    assert first.load1 >= 0 and first.swap_used >= 0
    second = sampler.host_sample()
    assert 0.0 <= second.cpu_percent <= 100.0


def test_a_partial_pass_keeps_the_other_trees_baselines(spawn: Spawn) -> None:
    burn = spawn(BURN)
    other = spawn(ALLOCATE)
    sampler = TreeSampler()
    sampler.sample([burn.pid, other.pid])
    assert sampler.cached() == 2
    # Only `other`, not pruning: `burn` keeps its baseline, so its next CPU % is real.
    sampler.sample([other.pid], rescan=False, count_fds=False, prune=False)
    assert sampler.cached() == 2
    time.sleep(0.5)
    assert sampler.sample([burn.pid, other.pid])[burn.pid].cpu_percent > 0.0
    # A pass over some roots that prunes forgets the others.
    sampler.sample([other.pid])
    assert sampler.cached() == 1


def test_wait_false_returns_nothing_while_another_pass_holds_the_sampler(spawn: Spawn) -> None:
    proc = spawn(ALLOCATE)
    sampler = TreeSampler()
    with sampler._lock:
        assert sampler.sample([proc.pid], wait=False) == {}
    assert sampler.sample([proc.pid], wait=False)[proc.pid].processes == 1


def test_a_reused_pid_is_not_read_as_the_old_process(spawn: Spawn) -> None:
    proc = spawn(ALLOCATE)
    sampler = TreeSampler()
    assert sampler.sample([proc.pid])[proc.pid].processes == 1
    # As if the tree member found by the last rescan had exited and its pid been reused
    # by a process that started at another time.
    (key,) = sampler._members[proc.pid]
    sampler._members[proc.pid] = [(key[0], key[1] - 1)]
    assert sampler.sample([proc.pid], rescan=False) == {}


def test_own_rss() -> None:
    assert own_rss() == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
