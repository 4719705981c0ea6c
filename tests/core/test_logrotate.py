"""Size-based log rotation (SPEC 1.7): LogFile, the Compressor, and rotation through the
LogWriter. Real files under tmp_path; the clock and rename are replaced where a test needs
them to misbehave."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import random
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.core import logrotate
from corral.core.logrotate import Compressor, LogFile, RotationPolicy, rotated_files
from corral.core.logwriter import LogWriter

KEEP_ALL = 1_000_000
STAMPED = re.compile(r"out\.log\.\d{8}-\d{6}-\d{6}(\.\d+)?(\.gz)?")


def read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def pieces(path: Path) -> list[bytes]:
    """The rotated files of `path` in order, decompressed, then the current file."""
    current = [path.read_bytes()] if path.exists() else []
    return [read(p) for p in rotated_files(path)] + current


def numbered_lines(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [f"{i:06} ".encode() + b"x" * rng.randrange(0, 300) + b"\n" for i in range(count)]


@pytest.fixture
def compressor() -> Iterator[Compressor]:
    c = Compressor()
    yield c
    assert c.close(timeout=30)


def settle(writer: LogWriter) -> None:
    writer.settled().result(timeout=60)


# --- through the LogWriter ---


def test_rotation_at_size_keeps_lines_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    max_size = 4096
    lines = numbered_lines(3000)
    writer = LogWriter(default_policy=RotationPolicy(max_size=max_size, retain=KEEP_ALL))
    try:
        rng = random.Random(3)
        i = 0
        while i < len(lines):  # one line or a few per submit, as a reader would
            n = rng.randrange(1, 6)
            writer.submit(path, b"".join(lines[i : i + n]))
            i += n
        settle(writer)
    finally:
        assert writer.close()
    files = pieces(path)
    assert len(files) > 50
    assert b"".join(files) == b"".join(lines)
    for content in files[:-1]:
        assert 0 < len(content) <= max_size
        assert content.endswith(b"\n")  # no line is cut across two files
    assert all(STAMPED.fullmatch(p.name) for p in rotated_files(path))
    assert writer.dropped_bytes(path) == 0


def test_rotated_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "out.log"
    writer = LogWriter(default_policy=RotationPolicy(max_size=10))
    try:
        writer.submit(path, b"0123456789\n")
        writer.submit(path, b"abc\n")
        settle(writer)
    finally:
        writer.close()
    for p in [path, *rotated_files(path)]:
        assert stat.S_IMODE(p.stat().st_mode) & ~0o640 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) & ~0o750 == 0


def test_retain_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    lines = [f"line {i:04}\n".encode() for i in range(200)]  # 10 bytes each
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, retain=3))
    try:
        for line in lines:
            writer.submit(path, line)
        settle(writer)
    finally:
        writer.close()
    files = pieces(path)
    assert len(files) == 4
    assert b"".join(files) == b"".join(lines[-40:])  # the last 3 full files + the current


def test_retain_zero_keeps_no_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, retain=0, compress=True))
    try:
        for i in range(50):
            writer.submit(path, f"line {i:04}\n".encode())
        settle(writer)
    finally:
        writer.close()
    assert os.listdir(tmp_path) == ["out.log"]
    assert path.read_bytes() == b"".join(f"line {i:04}\n".encode() for i in range(40, 50))


def test_gzip_replaces_each_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    lines = numbered_lines(500)
    writer = LogWriter(default_policy=RotationPolicy(max_size=2000, retain=KEEP_ALL, compress=True))
    try:
        for line in lines:
            writer.submit(path, line)
        settle(writer)
    finally:
        assert writer.close()
    rotated = rotated_files(path)
    assert len(rotated) > 10
    assert all(p.name.endswith(".gz") for p in rotated)
    assert sorted(os.listdir(tmp_path)) == sorted(["out.log", *(p.name for p in rotated)])
    with gzip.open(rotated[0]) as first:  # a valid gzip stream, readable by any tool
        assert first.read().startswith(b"000000 ")
    assert b"".join(pieces(path)) == b"".join(lines)


def test_compress_and_retain_together(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    lines = [f"line {i:04}\n".encode() for i in range(300)]
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, retain=2, compress=True))
    try:
        for line in lines:
            writer.submit(path, line)
        settle(writer)
    finally:
        writer.close()
    rotated = rotated_files(path)
    assert len(rotated) == 2
    assert all(p.name.endswith(".gz") for p in rotated)
    assert len(os.listdir(tmp_path)) == 3
    assert b"".join(pieces(path)) == b"".join(lines[-30:])


def test_rotation_across_reopen_and_truncate(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, retain=KEEP_ALL))
    try:
        writer.submit(path, b"a" * 59 + b"\n")
        writer.drained().result(timeout=10)
        with open(path, "ab") as other:  # another writer: the size is re-read at reopen
            other.write(b"b" * 29 + b"\n")
        writer.reopen_all().result(timeout=10)
        writer.submit(path, b"c" * 19 + b"\n")  # 90 + 20 > 100: rotates first
        writer.drained().result(timeout=10)
        assert pieces(path) == [b"a" * 59 + b"\n" + b"b" * 29 + b"\n", b"c" * 19 + b"\n"]

        writer.truncate(path).result(timeout=10)
        writer.submit(path, b"d" * 99 + b"\n")  # fits the emptied file: no rotation
        writer.drained().result(timeout=10)
        assert len(rotated_files(path)) == 1
        assert path.read_bytes() == b"d" * 99 + b"\n"

        # The file moved away by another tool, then reload-logs: a fresh file, size 0.
        path.rename(tmp_path / "elsewhere")
        writer.reopen_all().result(timeout=10)
        writer.submit(path, b"e" * 99 + b"\n")
        writer.drained().result(timeout=10)
        assert len(rotated_files(path)) == 1
        assert path.read_bytes() == b"e" * 99 + b"\n"
    finally:
        writer.close()


def test_failing_rename_keeps_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out.log"
    attempts: list[Path] = []

    def no_rename(src: Path, dst: Path) -> None:
        attempts.append(dst)
        raise OSError(errno.EACCES, "Permission denied")

    lines = [f"line {i:04}\n".encode() for i in range(100)]
    writer = LogWriter(default_policy=RotationPolicy(max_size=100, retain=KEEP_ALL))
    try:
        with monkeypatch.context() as patch:
            patch.setattr(LogFile, "_rename", staticmethod(no_rename))
            for line in lines[:50]:
                writer.submit(path, line)
                writer.drained().result(timeout=10)  # one write each: many attempts
        assert len(attempts) > 10
        assert rotated_files(path) == []
        assert path.read_bytes() == b"".join(lines[:50])  # it just kept growing

        for line in lines[50:]:  # rename works again: rotation resumes
            writer.submit(path, line)
        writer.drained().result(timeout=10)
    finally:
        writer.close()
    assert rotated_files(path)
    assert b"".join(pieces(path)) == b"".join(lines)
    assert writer.dropped_bytes(path) == 0
    failures = [r for r in caplog.records if "rotation failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not once per attempt


def test_when_drained_fires_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = LogWriter(default_policy=RotationPolicy(max_size=1000))
    called = threading.Event()
    try:
        for i in range(100):
            writer.submit(path, f"line {i:04}\n".encode())
        writer.when_drained(path, 0, called.set)
        assert called.wait(10)
        assert writer.queued_bytes(path) == 0
    finally:
        writer.close()


# --- LogFile on its own ---


def test_a_line_longer_than_max_size_gets_a_file_of_its_own(
    tmp_path: Path, compressor: Compressor
) -> None:
    path = tmp_path / "out.log"
    log_file = LogFile(path, RotationPolicy(max_size=100, retain=KEEP_ALL), compressor)
    giant = b"g" * 300 + b"\n"
    assert log_file.write(b"a" * 49 + b"\n") == 0
    assert log_file.write(giant + b"b\n") == 0
    assert log_file.write(b"c" * 500) == 0  # no newline at all, and the file not empty
    assert log_file.write(b"d\n") == 0
    log_file.close()
    assert pieces(path) == [b"a" * 49 + b"\n", giant, b"b\n", b"c" * 500, b"d\n"]


def test_a_chunk_is_cut_at_its_last_newline_that_fits(
    tmp_path: Path, compressor: Compressor
) -> None:
    path = tmp_path / "out.log"
    log_file = LogFile(path, RotationPolicy(max_size=10, retain=KEEP_ALL), compressor)
    assert log_file.write(b"aa\n") == 0
    assert log_file.write(b"bb\ncc\ndd\nee\n") == 0  # "bb\ncc\n" fits after "aa\n"
    log_file.close()
    assert pieces(path) == [b"aa\nbb\ncc\n", b"dd\nee\n"]


def test_rotated_names_stay_ordered_when_the_clock_stands_still(
    tmp_path: Path, compressor: Compressor, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:
            return cls(2024, 5, 6, 7, 8, 9, 123456)

    monkeypatch.setattr(logrotate, "datetime", Frozen)
    path = tmp_path / "out.log"
    log_file = LogFile(path, RotationPolicy(max_size=3, retain=KEEP_ALL), compressor)
    lines = [f"{i}\n".encode() for i in range(12)]
    for line in lines:
        log_file.write(line)
    log_file.close()
    names = [p.name for p in rotated_files(path)]
    assert names[:3] == [
        "out.log.20240506-070809-123456",
        "out.log.20240506-070809-123456.1",
        "out.log.20240506-070809-123456.2",
    ]
    assert names[-1] == "out.log.20240506-070809-123456.10"  # numeric order, not text
    assert b"".join(pieces(path)) == b"".join(lines)


def test_a_file_moved_by_someone_else_is_not_renamed(
    tmp_path: Path, compressor: Compressor
) -> None:
    path, moved = tmp_path / "out.log", tmp_path / "moved.log"
    log_file = LogFile(path, RotationPolicy(max_size=100, retain=KEEP_ALL), compressor)
    log_file.write(b"a" * 89 + b"\n")
    path.rename(moved)  # no reload-logs: we still hold the moved file open
    log_file.write(b"b" * 19 + b"\n")
    log_file.close()
    assert moved.read_bytes() == b"a" * 89 + b"\n"
    assert path.read_bytes() == b"b" * 19 + b"\n"
    assert rotated_files(path) == []


def test_a_file_emptied_by_someone_else_is_not_rotated(
    tmp_path: Path, compressor: Compressor
) -> None:
    path = tmp_path / "out.log"
    log_file = LogFile(path, RotationPolicy(max_size=100, retain=KEEP_ALL), compressor)
    log_file.write(b"a" * 89 + b"\n")
    os.truncate(path, 0)  # copytruncate
    log_file.write(b"b" * 19 + b"\n")
    log_file.close()
    assert path.read_bytes() == b"b" * 19 + b"\n"
    assert rotated_files(path) == []


def test_only_regular_files_are_rotated(tmp_path: Path, compressor: Compressor) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log_file = LogFile(fifo, RotationPolicy(max_size=1), compressor)
        assert log_file.write(b"one\n") == 0
        assert log_file.write(b"two\n") == 0
        log_file.close()
        assert os.read(reader, 100) == b"one\ntwo\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    # (A symlink is not even opened: see the next test.)


def test_write_failure_is_reported_and_recovers(tmp_path: Path, compressor: Compressor) -> None:
    blocker = tmp_path / "dir"
    blocker.write_text("")  # a file where the folder should be
    path = blocker / "out.log"
    log_file = LogFile(path, RotationPolicy(max_size=10), compressor)
    assert log_file.write(b"lost\n") == 5
    blocker.unlink()
    assert log_file.write(b"kept\n") == 0
    log_file.close()
    assert path.read_bytes() == b"kept\n"


# --- no byte lost or written twice, whatever the chunks ---

chunks = st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"\n")), max_size=40)
whole_lines = st.lists(
    st.lists(st.integers(0, 250), min_size=1, max_size=5).map(
        lambda lengths: b"".join(b"x" * n + b"\n" for n in lengths)
    ),
    max_size=40,
)


def check_rotation(data: list[bytes], max_size: int) -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.log"
        compressor = Compressor()
        log_file = LogFile(path, RotationPolicy(max_size=max_size, retain=KEEP_ALL), compressor)
        for chunk in data:
            assert log_file.write(chunk) == 0
        log_file.close()
        files = pieces(path)
        assert compressor.close()
    assert b"".join(files) == b"".join(data)
    for content in files[:-1]:
        assert content  # never an empty rotated file
        # Within the limit, or a single line too long for it (its only newline at the end).
        assert len(content) <= max_size or b"\n" not in content[:-1]
    return files


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=chunks, max_size=st.integers(1, 400))
def test_property_nothing_lost_or_duplicated_at_the_boundary(
    data: list[bytes], max_size: int
) -> None:
    check_rotation(data, max_size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=whole_lines, max_size=st.integers(1, 400))
def test_property_whole_lines_stay_whole(data: list[bytes], max_size: int) -> None:
    files = check_rotation(data, max_size)
    assert all(content.endswith(b"\n") for content in files)


# --- the Compressor ---


def make_rotated(base: Path, stamp: str, content: bytes = b"data\n") -> Path:
    rotated = base.with_name(f"{base.name}.{stamp}")
    rotated.write_bytes(content)
    return rotated


def test_prune_touches_only_rotated_siblings(tmp_path: Path, compressor: Compressor) -> None:
    base = tmp_path / "out.log"
    base.write_bytes(b"current\n")
    others = [
        "out.log.1",
        "out.log.old",
        "out.log.20240101-000000-000000.txt",
        "out.log.20240101-000000-00000",
        "xout.log.20240101-000000-000000",
        "out-1.log.20240101-000000-000000",
        "out.log.20240101-000000-000000.gz.bak",
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours\n")
    make_rotated(base, "20240101-000000-000001")
    make_rotated(base, "20240101-000000-000002.gz")
    make_rotated(base, "20240101-000000-000002.1")
    compressor.prune(base, 1)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [*others, "out.log", "out.log.20240101-000000-000002.1"]
    )
    compressor.prune(base, 0)
    assert sorted(os.listdir(tmp_path)) == sorted([*others, "out.log"])


class GatedCompressor(Compressor):
    """Compresses only once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.gate = threading.Event()

    def _compress(self, src: Path) -> None:
        self.started.set()
        self.gate.wait(30)
        super()._compress(src)


def test_the_file_being_compressed_is_never_deleted(tmp_path: Path) -> None:
    base = tmp_path / "out.log"
    old = make_rotated(base, "20240101-000000-000001", b"old\n")
    new = make_rotated(base, "20240101-000000-000002", b"new\n")
    compressor = GatedCompressor()
    try:
        compressor.submit(old, base, 1)
        assert compressor.started.wait(10)
        compressor.prune(base, 1)  # `old` is beyond retain, but being compressed
        assert old.exists()
        compressor.gate.set()
        compressor.barrier().result(timeout=10)
    finally:
        compressor.gate.set()
        assert compressor.close(timeout=10)
    # Once compressed, retain was applied again: only the newest is left.
    assert sorted(os.listdir(tmp_path)) == [new.name]


def test_compression_failure_keeps_the_plain_file_and_the_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "out.log"
    first = make_rotated(base, "20240101-000000-000001", b"first\n")
    second = make_rotated(base, "20240101-000000-000002", b"second\n")
    Path(f"{first}.gz.tmp").mkdir()  # the temporary file cannot be created
    compressor = Compressor()
    try:
        compressor.submit(first, base, KEEP_ALL)
        compressor.submit(second, base, KEEP_ALL)
        compressor.barrier().result(timeout=10)
    finally:
        assert compressor.close(timeout=10)
    assert first.read_bytes() == b"first\n"
    assert gzip.decompress(Path(f"{second}.gz").read_bytes()) == b"second\n"
    assert not second.exists()
    assert sum("cannot compress" in r.getMessage() for r in caplog.records) == 1


def test_a_file_pruned_before_its_turn_is_skipped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "out.log"
    gone = make_rotated(base, "20240101-000000-000001")
    gone.unlink()
    compressor = Compressor()
    try:
        with caplog.at_level(logging.WARNING):
            compressor.submit(gone, base, KEEP_ALL)
            compressor.barrier().result(timeout=10)
    finally:
        assert compressor.close(timeout=10)
    assert os.listdir(tmp_path) == []
    assert not caplog.records


def test_barrier_and_close_without_a_thread() -> None:
    compressor = Compressor()
    assert compressor.barrier().result(timeout=1) is None
    assert compressor.close(timeout=1)
    compressor.submit(Path("/nonexistent/x.log.1"), Path("/nonexistent/x.log"), 1)  # ignored
    assert compressor.barrier().result(timeout=1) is None


def test_a_symlink_planted_at_the_log_path_is_never_written_through(
    tmp_path: Path, compressor: Compressor
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    planted = tmp_path / "app.log"
    planted.symlink_to(victim)
    log_file = LogFile(planted, RotationPolicy(), compressor)
    try:
        lost = log_file.write(b"attacker-controlled line\n")
    finally:
        log_file.close()
    assert lost == len(b"attacker-controlled line\n")
    assert victim.read_bytes() == b"precious\n"
