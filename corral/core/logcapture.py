"""Capture of an instance's stdout and stderr (SPEC 1.7): the event-loop half.

`InstanceOutput` reads an instance's pipes as soon as they are readable, frames lines
when a timestamp prefix or JSON lines are wanted, and hands the bytes to the
`LogWriter` (corral.core.logwriter), which owns the files in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from corral.core.logwriter import LogWriter

log = logging.getLogger(__name__)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

MAX_PARTIAL_LINE = 64 * 1024
"""A line without its newline is held back at most this long, then written as is."""
READ_SIZE = 1024 * 1024
PIPE_SIZE = 1024 * 1024
"""Bigger pipes mean fewer wake-ups under a flood (the kernel caps it for non-root)."""
HIGH_WATER = 2 * 1024 * 1024
"""Bytes queued for a file above which the pipe is not read for a while: the app then
writes at the disk's pace, as it would to a file, and nothing is lost under a flood."""
LOW_WATER = 512 * 1024
STALL_TIMEOUT = 2.0
"""If the writer has not caught up after this long (a hung or very slow disk), reading
resumes and what does not fit in the writer's bounded buffer is dropped and counted:
the app is never held up for longer than this."""
DISCARD = Path("/dev/null")


@dataclass(frozen=True)
class LineFormat:
    """How lines are framed in the file. Raw with no timestamp is written byte for byte."""

    timestamp_format: str | None = None
    """strftime format of a prefix `<time>: ` for every line."""
    json_app: str | None = None
    """If set, JSON lines: one object per line with time, app, instance, stream, message."""
    json_instance: int = 0

    @property
    def framed(self) -> bool:
        return self.timestamp_format is not None or self.json_app is not None


@dataclass
class _Stream:
    name: Literal["out", "err"]
    path: Path
    fd: int | None = None
    carry: bytearray = field(default_factory=bytearray)
    """The start of a line whose newline has not arrived yet (framed modes only)."""
    started: bool = False
    """Part of the carried line was already written (with its prefix)."""
    paused: bool = False
    """Not reading the pipe: the writer is behind on this file."""
    dropping: bool = False
    """The writer stalled: read anyway, and let its bounded buffer drop the excess."""
    stall: asyncio.TimerHandle | None = None


class InstanceOutput:
    """The `OutputSink` of one instance: its two pipes, read on the event loop.

    Raw bytes go to the files unchanged (invalid UTF-8 included). With a timestamp format
    or JSON lines, whole lines are written, so instances sharing a file (`merge_logs`) do
    not cut into each other's lines. `on_line(stream, chunk)` sees every chunk as read
    ("out"/"err"). A stream whose path is /dev/null is read and thrown away.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writer: LogWriter,
        out_path: Path,
        err_path: Path,
        *,
        timestamp_format: str | None = None,
        line_format: LineFormat | None = None,
        on_line: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._loop = loop
        self._writer = writer
        self.out_path = out_path
        self.err_path = err_path
        self._format = line_format or LineFormat(timestamp_format=timestamp_format)
        self._on_line = on_line
        self._streams = (_Stream("out", out_path), _Stream("err", err_path))
        # A chunk larger than the writer's buffer could never be queued: read less.
        self._read_size = max(4096, min(READ_SIZE, writer.max_buffer // 4))

    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        for stream, fd in zip(self._streams, (stdout_fd, stderr_fd), strict=True):
            if any(s.fd == fd for s in self._streams):  # one pipe for both: read it once
                continue
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            stream.fd = fd
            self._loop.add_reader(fd, self._readable, stream)

    def close(self) -> None:
        """Stop reading and close the pipes; a carried partial line is written out."""
        for stream in self._streams:
            self._close_stream(stream)

    @property
    def dropped_bytes(self) -> int:
        """Bytes lost on the way to this instance's files (shared with other instances
        writing the same files)."""
        dropped = self._writer.dropped_bytes(self.out_path)
        if self.err_path != self.out_path:
            dropped += self._writer.dropped_bytes(self.err_path)
        return dropped

    @property
    def open_streams(self) -> int:
        """How many pipes are still being read (0 once the child and its group closed them)."""
        return sum(s.fd is not None for s in self._streams)

    # ---------------------------------------------------------------- reading

    def _readable(self, stream: _Stream) -> None:
        if stream.fd is None:
            return
        try:
            data = os.read(stream.fd, self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("reading std%s of an instance failed: %s", stream.name, exc)
            data = b""
        if not data:  # EOF: every writer of the pipe has closed it
            self._close_stream(stream)
            return
        if self._on_line is not None:
            try:
                self._on_line(stream.name, data)
            except Exception:
                log.exception("output listener failed")
        if stream.path == DISCARD:
            return
        out = self._frame(stream, data) if self._format.framed else data
        if out:
            self._writer.submit(stream.path, out)
            self._throttle(stream)

    # ----------------------------------------------------------- backpressure

    def _throttle(self, stream: _Stream) -> None:
        if stream.dropping or stream.fd is None:
            return
        if self._writer.queued_bytes(stream.path) < HIGH_WATER:
            return
        stream.paused = True
        self._loop.remove_reader(stream.fd)
        stream.stall = self._loop.call_later(STALL_TIMEOUT, self._stalled, stream)
        self._writer.when_drained(
            stream.path,
            LOW_WATER,
            lambda: self._loop.call_soon_threadsafe(self._drained, stream),
        )

    def _drained(self, stream: _Stream) -> None:
        stream.dropping = False
        if stream.stall is not None:
            stream.stall.cancel()
            stream.stall = None
        if stream.paused:
            stream.paused = False
            if stream.fd is not None:
                self._loop.add_reader(stream.fd, self._readable, stream)

    def _stalled(self, stream: _Stream) -> None:
        """The disk did not keep up: never hold the app any longer; drop instead."""
        stream.stall = None
        stream.dropping = True
        if stream.paused:
            stream.paused = False
            if stream.fd is not None:
                self._loop.add_reader(stream.fd, self._readable, stream)
        log.warning("log file %s is not keeping up; dropping output", stream.path)

    def _close_stream(self, stream: _Stream) -> None:
        if stream.stall is not None:
            stream.stall.cancel()
            stream.stall = None
        if stream.fd is not None:
            fd, stream.fd = stream.fd, None
            if not stream.paused:
                self._loop.remove_reader(fd)
            stream.paused = False
            with contextlib.suppress(OSError):  # nothing useful to do about it
                os.close(fd)
        if stream.carry:
            # End the line, so that the next run's first line is framed on its own.
            if stream.path != DISCARD:
                piece = self._piece(stream, bytes(stream.carry), True, datetime.now().astimezone())
                self._writer.submit(stream.path, piece)
            stream.carry.clear()
            stream.started = False

    # ---------------------------------------------------------------- framing

    def _frame(self, stream: _Stream, data: bytes) -> bytes:
        """Frame every complete line; carry an unfinished one to the next chunk."""
        now = datetime.now().astimezone()  # one clock read per chunk: its lines came together
        out = bytearray()
        end = data.rfind(b"\n")
        if end >= 0:
            complete = bytes(stream.carry) + data[:end] if stream.carry else data[:end]
            # split, not splitlines: a lone \r (progress bars) does not end a line.
            for line in complete.split(b"\n"):
                out += self._piece(stream, line, True, now)
            stream.carry = bytearray(data[end + 1 :])
        else:
            stream.carry += data
        if len(stream.carry) > MAX_PARTIAL_LINE:
            # A giant line: write what we have so memory stays bounded; the rest of the
            # line follows later, marked as its continuation.
            out += self._piece(stream, bytes(stream.carry), False, now)
            stream.carry = bytearray()
        return bytes(out)

    def _piece(self, stream: _Stream, text: bytes, line_ends: bool, now: datetime) -> bytes:
        """One framed line, or one part of a line too long to hold (`line_ends` False)."""
        continued = stream.started
        stream.started = not line_ends
        fmt = self._format
        if fmt.json_app is not None:
            record: dict[str, object] = {
                "time": now.isoformat(timespec="milliseconds"),
                "app": fmt.json_app,
                "instance": fmt.json_instance,
                "stream": stream.name,
                "message": text.decode("utf-8", errors="replace"),
            }
            if continued or not line_ends:
                record["partial"] = True
            return json.dumps(record, ensure_ascii=False).encode() + b"\n"
        assert fmt.timestamp_format is not None
        prefix = b"" if continued else (now.strftime(fmt.timestamp_format) + ": ").encode()
        return prefix + text + (b"\n" if line_ends else b"")
