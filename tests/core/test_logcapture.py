"""Log capture with a real event loop, real pipes, real child processes and real files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest

from corral.core.logcapture import MAX_PARTIAL_LINE, InstanceOutput
from corral.core.logwriter import LogWriter

from .test_logwriter import GatedWriter

# Writes a bit of everything to both streams: invalid UTF-8, a line without its newline,
# a \r that is not a line end, and enough bytes to take many reads.
CHATTY = r"""
import os, sys
out, err = sys.stdout.buffer, sys.stderr.buffer
out.write(b"hello\n\xff\xfe not utf-8 \xc3\x28\n"); out.flush()
err.write(b"oops\r\n"); err.flush()
out.write(bytes(range(256)) * 1000); out.flush()
err.write(b"progress 10%\rprogress 20%\n"); err.flush()
out.write(b"no newline at the end")
"""
EXPECTED_OUT = (
    b"hello\n\xff\xfe not utf-8 \xc3\x28\n" + bytes(range(256)) * 1000 + b"no newline at the end"
)
EXPECTED_ERR = b"oops\r\nprogress 10%\rprogress 20%\n"


@pytest.fixture
def writer() -> Iterator[LogWriter]:
    w = LogWriter()
    yield w
    w.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed at teardown whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def spawn_writing_child(code: str, children: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """Start `python -c code` with its stdout/stderr on fresh pipes; return the read ends."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        children.append(subprocess.Popen([sys.executable, "-c", code], stdout=out_w, stderr=err_w))
    finally:
        os.close(out_w)
        os.close(err_w)
    return out_r, err_r


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def drained(writer: LogWriter) -> None:
    await asyncio.wrap_future(writer.drained())


def run(main: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(main())


def test_child_output_is_written_byte_for_byte(
    tmp_path: Path, writer: LogWriter, children: list[subprocess.Popen[bytes]]
) -> None:
    out_path, err_path = tmp_path / "logs" / "app-out.log", tmp_path / "logs" / "app-err.log"
    seen: list[tuple[str, bytes]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        output = InstanceOutput(
            loop, writer, out_path, err_path, on_line=lambda s, b: seen.append((s, b))
        )
        output.attach(*spawn_writing_child(CHATTY, children))
        try:
            await until(lambda: output.open_streams == 0, "EOF on both pipes")
        finally:
            output.close()
        await drained(writer)

    run(main)
    assert out_path.read_bytes() == EXPECTED_OUT
    assert err_path.read_bytes() == EXPECTED_ERR
    assert b"".join(b for s, b in seen if s == "out") == EXPECTED_OUT
    assert b"".join(b for s, b in seen if s == "err") == EXPECTED_ERR
    mode = out_path.stat().st_mode & 0o777
    assert mode & ~0o640 == 0  # 0640, or stricter under a strict umask
    assert writer.dropped_bytes(out_path) == 0


def test_timestamp_prefix_follows_lines_across_chunks(tmp_path: Path, writer: LogWriter) -> None:
    out_path, err_path = tmp_path / "out.log", tmp_path / "err.log"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        output = InstanceOutput(
            loop,
            writer,
            out_path,
            err_path,
            timestamp_format="[%Y]",
            on_line=lambda s, b: got.set(),
        )
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        output.attach(out_r, err_r)
        try:
            # Each piece is read on its own before the next is written.
            for piece in [b"hel", b"lo\nwor", b"ld\n", b"a\nb\n\nc", b" \xff\rd", b"\n"]:
                got.clear()
                os.write(out_w, piece)
                await asyncio.wait_for(got.wait(), 10)
            os.write(err_w, b"unfinished")
        finally:
            os.close(out_w)
            os.close(err_w)
            await until(lambda: output.open_streams == 0, "EOF")
        await drained(writer)

    run(main)
    stamp = rb"\[\d{4}\]: "
    lines = out_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    bodies = [re.sub(b"^" + stamp, b"", line) for line in lines[:-1]]
    assert bodies == [b"hello", b"world", b"a", b"b", b"", b"c \xff\rd"]
    assert all(re.match(stamp, line) for line in lines[:-1])
    # A partial line is ended at EOF, so the next run's first line gets its own prefix.
    assert re.fullmatch(stamp + b"unfinished\n", err_path.read_bytes())


def test_giant_line_is_flushed_in_pieces_with_one_prefix(tmp_path: Path, writer: LogWriter) -> None:
    out_path = tmp_path / "out.log"
    giant = b"x" * (3 * MAX_PARTIAL_LINE + 123)
    read = 0

    def count(stream: str, chunk: bytes) -> None:
        nonlocal read
        read += len(chunk)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        output = InstanceOutput(
            loop, writer, out_path, tmp_path / "err.log", timestamp_format="T", on_line=count
        )
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        os.close(err_w)
        output.attach(out_r, err_r)
        try:
            await asyncio.to_thread(os.write, out_w, giant)  # larger than the pipe buffer
            await until(lambda: read == len(giant), "the whole line to be read")
            await drained(writer)
            # Most of the line is already on disk although its newline has not come:
            # at most MAX_PARTIAL_LINE bytes are held back.
            assert out_path.stat().st_size >= len(giant) - MAX_PARTIAL_LINE
            os.write(out_w, b"\nnext\n")
        finally:
            os.close(out_w)
            await until(lambda: output.open_streams == 0, "EOF")
        await drained(writer)

    run(main)
    assert out_path.read_bytes() == b"T: " + giant + b"\nT: next\n"


def test_one_pipe_for_both_streams(tmp_path: Path, writer: LogWriter) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        output = InstanceOutput(loop, writer, tmp_path / "o.log", tmp_path / "e.log")
        r, w = os.pipe()
        output.attach(r, r)
        assert output.open_streams == 1
        os.write(w, b"both\n")
        os.close(w)
        await until(lambda: output.open_streams == 0, "EOF")
        await drained(writer)

    run(main)
    assert (tmp_path / "o.log").read_bytes() == b"both\n"


def test_close_stops_reading_and_closes_the_pipes(tmp_path: Path, writer: LogWriter) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        output = InstanceOutput(loop, writer, tmp_path / "o.log", tmp_path / "e.log")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        output.attach(out_r, err_r)
        output.close()
        assert output.open_streams == 0
        try:
            # The read ends are closed: writing to the pipes now fails.
            for w in (out_w, err_w):
                with pytest.raises(BrokenPipeError):
                    os.write(w, b"x")
        finally:
            os.close(out_w)
            os.close(err_w)

    run(main)


def test_child_is_never_blocked_by_a_stuck_disk(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    total = 4 * 1024 * 1024
    code = f"import sys; sys.stdout.buffer.write(b'z' * {total})"
    writer = GatedWriter(max_buffer=256 * 1024)
    out_path = tmp_path / "out.log"
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            output = InstanceOutput(loop, writer, out_path, tmp_path / "err.log")
            output.attach(*spawn_writing_child(code, children))
            try:
                # The child writes 16 times the buffer and exits although nothing is
                # written to disk meanwhile: the excess is dropped, not waited for.
                await until(lambda: output.open_streams == 0, "the child to finish")
                assert children[0].wait(10) == 0
                assert output.dropped_bytes >= total - 256 * 1024
            finally:
                output.close()
            writer.gate.set()
            await drained(writer)
            assert out_path.stat().st_size + output.dropped_bytes == total

        run(main)
    finally:
        writer.gate.set()
        writer.close()
