"""The LogWriter (SPEC 1.7): its thread, its bounded buffer, and the operations queued with
the data (truncate, reopen, release). Real files; a slow disk is stood in by GatedWriter."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest

from corral.core.logrotate import DEFAULT_POLICY, RotationPolicy, rotated_files
from corral.core.logwriter import LogWriter


class GatedWriter(LogWriter):
    """A LogWriter on a disk that hangs: every write waits until the test opens the gate."""

    def __init__(self, max_buffer: int, default_policy: RotationPolicy = DEFAULT_POLICY) -> None:
        self.gate = threading.Event()
        self.writing = threading.Event()
        super().__init__(max_buffer, default_policy)

    def _write_fd(self, fd: int, data: memoryview) -> int:
        self.writing.set()
        self.gate.wait(30)
        return super()._write_fd(fd, data)


@pytest.fixture
def writer() -> Iterator[LogWriter]:
    w = LogWriter()
    yield w
    w.close()


@pytest.fixture
def gated() -> Iterator[GatedWriter]:
    w = GatedWriter(max_buffer=1_000_000)
    yield w
    w.gate.set()
    w.close()


async def drained(writer: LogWriter) -> None:
    await asyncio.wrap_future(writer.drained())


def run(main: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(main())


def wait(writer: LogWriter) -> None:
    """Everything submitted so far is written (from a thread that is not a loop)."""
    writer.drained().result(timeout=30)


def test_stuck_disk_drops_beyond_the_buffer_and_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = GatedWriter(max_buffer=100_000)
    chunk = b"y" * 10_000
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            ran: list[bool] = []
            loop.call_soon(ran.append, True)
            accepted = [writer.submit(path, chunk) for _ in range(50)]
            await asyncio.sleep(0)
            assert ran == [True]  # the loop kept turning
            assert accepted.count(True) == 10
            assert writer.dropped_bytes(path) == 40 * len(chunk)
            await asyncio.to_thread(writer.writing.wait, 10)  # the thread is stuck in write
            assert not writer.submit(path, chunk)
            writer.gate.set()
            await drained(writer)
            assert writer.submit(path, chunk)  # room again once the disk caught up
            await drained(writer)

        run(main)
    finally:
        writer.gate.set()
        writer.close()
    assert path.read_bytes() == chunk * 11
    assert writer.dropped_bytes(path) == 41 * len(chunk)


def test_reopen_all_recreates_a_deleted_file_and_follows_a_rename(
    tmp_path: Path, writer: LogWriter
) -> None:
    deleted, rotated = tmp_path / "deleted.log", tmp_path / "rotated.log"

    async def main() -> None:
        writer.submit(deleted, b"before\n")
        writer.submit(rotated, b"before\n")
        await drained(writer)
        deleted.unlink()
        rotated.rename(tmp_path / "rotated.log.1")
        writer.submit(rotated, b"queued before the reopen\n")
        await asyncio.wrap_future(writer.reopen_all())
        writer.submit(deleted, b"after\n")
        writer.submit(rotated, b"after\n")
        await drained(writer)

    run(main)
    assert deleted.read_bytes() == b"after\n"
    assert rotated.read_bytes() == b"after\n"
    assert (tmp_path / "rotated.log.1").read_bytes() == b"before\nqueued before the reopen\n"


def test_truncate_empties_the_file(tmp_path: Path, writer: LogWriter) -> None:
    path = tmp_path / "out.log"

    async def main() -> None:
        writer.submit(path, b"old line\n" * 100)
        await drained(writer)
        assert path.stat().st_size == 900
        await asyncio.wrap_future(writer.truncate(path))
        assert path.stat().st_size == 0
        writer.submit(path, b"new\n")
        await drained(writer)

    run(main)
    assert path.read_bytes() == b"new\n"


def test_truncate_discards_queued_data(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = GatedWriter(max_buffer=1000)
    try:

        async def main() -> None:
            writer.submit(path, b"a" * 100)
            await asyncio.to_thread(writer.writing.wait, 10)
            writer.submit(path, b"b" * 900)  # waiting behind the stuck write
            assert not writer.submit(path, b"c")
            flushed = writer.truncate(path)
            assert writer.submit(path, b"d" * 900)  # the discarded bytes freed the buffer
            writer.gate.set()
            await asyncio.wrap_future(flushed)
            await drained(writer)

        run(main)
    finally:
        writer.gate.set()
        writer.close()
    assert path.read_bytes() == b"d" * 900
    assert writer.dropped_bytes(path) == 1  # the "c"; flushed bytes are not losses


def test_failed_writes_are_counted_and_the_thread_survives(
    tmp_path: Path, writer: LogWriter
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    full, fine = Path("/dev/full"), tmp_path / "fine.log"

    async def main() -> None:
        assert writer.submit(full, b"x" * 1234)  # accepted, then lost: ENOSPC
        await drained(writer)
        writer.submit(fine, b"ok\n")
        await drained(writer)

    run(main)
    assert writer.dropped_bytes(full) == 1234
    assert fine.read_bytes() == b"ok\n"


def test_unwritable_folder_counts_drops(tmp_path: Path, writer: LogWriter) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "out.log"  # its parent is a file: cannot be created

    async def main() -> None:
        writer.submit(path, b"lost\n")
        await drained(writer)
        with pytest.raises(OSError):
            await asyncio.wrap_future(writer.truncate(path))

    run(main)
    assert writer.dropped_bytes(path) == 5


def test_parent_folder_is_created(tmp_path: Path, writer: LogWriter) -> None:
    path = tmp_path / "a" / "b" / "out.log"

    async def main() -> None:
        writer.submit(path, b"x")
        await drained(writer)

    run(main)
    assert path.read_bytes() == b"x"


def test_close_drains_then_refuses(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = LogWriter()
    for i in range(100):
        writer.submit(path, f"line {i}\n".encode())
    assert writer.close(timeout=10)
    assert path.read_bytes() == b"".join(f"line {i}\n".encode() for i in range(100))
    assert not writer.submit(path, b"late")
    assert writer.dropped_bytes(path) == 4
    assert writer.drained().result(timeout=1) is None  # does not hang after close


def test_release_forgets_the_file(tmp_path: Path, writer: LogWriter) -> None:
    path = tmp_path / "out.log"

    async def main() -> None:
        writer.submit(path, b"x")
        await asyncio.wrap_future(writer.release(path))
        assert path not in writer._dests
        writer.submit(path, b"y")  # writing again simply reopens it
        await drained(writer)

    run(main)
    assert path.read_bytes() == b"xy"


# --- backpressure: queued_bytes and when_drained ---


class Calls:
    """A when_drained callback that records the thread it was called from."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.called = threading.Event()

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.called.set()


def test_queued_bytes_counts_what_is_not_written_yet(tmp_path: Path, gated: GatedWriter) -> None:
    path = tmp_path / "out.log"
    assert gated.queued_bytes(path) == 0
    gated.submit(path, b"a" * 100)
    assert gated.writing.wait(10)
    gated.submit(path, b"b" * 50)
    assert gated.queued_bytes(path) == 150  # being written counts too: not on disk yet
    gated.gate.set()
    wait(gated)
    assert gated.queued_bytes(path) == 0


def test_when_drained_is_called_at_once_when_already_low(
    tmp_path: Path, gated: GatedWriter
) -> None:
    path = tmp_path / "out.log"
    calls = Calls()
    gated.when_drained(path, 0, calls)  # a file never written to: nothing queued
    gated.submit(path, b"a" * 100)
    gated.when_drained(path, 100, calls)
    assert calls.threads == [threading.current_thread().name] * 2


def test_when_drained_fires_from_the_writer_once_the_queue_is_low(
    tmp_path: Path, gated: GatedWriter
) -> None:
    path = tmp_path / "out.log"
    gated.submit(path, b"a" * 100)
    assert gated.writing.wait(10)
    gated.submit(path, b"b" * 100)
    calls = Calls()
    gated.when_drained(path, 10, calls)
    assert not calls.called.is_set()
    gated.gate.set()
    assert calls.called.wait(10)
    wait(gated)
    assert calls.threads == ["corral-logwriter"]  # once, from the writer thread
    assert path.read_bytes() == b"a" * 100 + b"b" * 100


def test_when_drained_keeps_one_callback_per_file(tmp_path: Path, gated: GatedWriter) -> None:
    path, other = tmp_path / "out.log", tmp_path / "other.log"
    gated.submit(path, b"a" * 100)
    gated.submit(other, b"a" * 100)
    assert gated.writing.wait(10)
    first, second, third = Calls(), Calls(), Calls()
    gated.when_drained(path, 0, first)
    gated.when_drained(path, 0, second)  # replaces the first
    gated.when_drained(other, 0, third)  # another file: its own
    gated.gate.set()
    wait(gated)
    assert (first.threads, len(second.threads), len(third.threads)) == ([], 1, 1)


def test_when_drained_fires_when_truncate_empties_the_queue(tmp_path: Path) -> None:
    path, other = tmp_path / "out.log", tmp_path / "other.log"
    writer = GatedWriter(max_buffer=1_000_000)
    try:
        writer.submit(other, b"x")  # keeps the thread stuck on another file
        assert writer.writing.wait(10)
        writer.submit(path, b"a" * 1000)
        calls = Calls()
        writer.when_drained(path, 0, calls)
        writer.truncate(path)  # discards the queued bytes: nothing left to write
        assert writer.queued_bytes(path) == 0
        writer.gate.set()
        assert calls.called.wait(10)
        wait(writer)
    finally:
        writer.gate.set()
        writer.close()
    assert path.read_bytes() == b""


def test_a_failing_callback_does_not_stop_the_writer(tmp_path: Path, gated: GatedWriter) -> None:
    path = tmp_path / "out.log"

    def boom() -> None:
        raise RuntimeError("listener bug")

    gated.submit(path, b"a\n")
    assert gated.writing.wait(10)
    gated.when_drained(path, 0, boom)
    gated.gate.set()
    wait(gated)
    gated.submit(path, b"b\n")
    wait(gated)
    assert path.read_bytes() == b"a\nb\n"


def test_a_cancelled_future_does_not_break_the_queue(tmp_path: Path, gated: GatedWriter) -> None:
    path = tmp_path / "out.log"
    gated.submit(path, b"a\n")
    assert gated.writing.wait(10)
    gated.truncate(path).cancel()  # as asyncio.wrap_future does when its task is cancelled
    gated.submit(path, b"b\n")
    gated.gate.set()
    wait(gated)
    assert path.read_bytes() == b"b\n"
    assert gated.queued_bytes(path) == 0


# --- rotation policies ---


def test_default_and_per_path_policy(tmp_path: Path) -> None:
    own, default = tmp_path / "own.log", tmp_path / "default.log"
    line = b"x" * 99 + b"\n"
    writer = LogWriter(default_policy=RotationPolicy(max_size=500, retain=100))
    try:
        writer.set_policy(own, RotationPolicy(max_size=0))  # never rotates
        for _ in range(20):
            writer.submit(own, line)
            writer.submit(default, line)
        wait(writer)
        assert rotated_files(own) == []
        assert len(rotated_files(default)) == 3
        assert own.stat().st_size == 2000

        writer.set_policy(own, None)  # back to the default: rotates at its next write
        writer.submit(own, line)
        wait(writer)
        assert len(rotated_files(own)) == 1
        assert own.read_bytes() == line

        writer.set_default_policy(RotationPolicy(max_size=10_000, retain=100))
        writer.submit(default, line)
        wait(writer)
        assert len(rotated_files(default)) == 3  # 600 bytes now fit under the new default
        assert default.stat().st_size == 600
    finally:
        writer.close()


def test_rotation_policy_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="max_size"):
        RotationPolicy(max_size=-1)
    with pytest.raises(ValueError, match="retain"):
        RotationPolicy(retain=-1)


def test_close_stops_the_compressor(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    before = set(threading.enumerate())
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, compress=True))
    for i in range(50):
        writer.submit(path, f"line {i:03}\n".encode() * 3)
    writer.drained().result(timeout=10)
    started = {t.name for t in set(threading.enumerate()) - before}
    assert writer.close(timeout=30)
    assert "corral-logcompress" in started
    assert not set(threading.enumerate()) - before  # both threads are gone
    # Files still waiting when it stopped stay plain: still rotated files, counted.
    assert not list(tmp_path.glob("*.tmp"))
    assert len(rotated_files(path)) == 10
