"""Capture of an instance's stdout and stderr (SPEC 1.7): the event-loop half.

`InstanceOutput` reads an instance's pipes as soon as they are readable, frames lines
when a timestamp prefix or JSON lines are wanted, and hands the bytes to the
`LogWriter` (corral.core.logwriter), which owns the files in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from corral.core.logwriter import LogWriter

log = logging.getLogger(__name__)

MAX_PARTIAL_LINE = 64 * 1024
"""A line without its newline is held back at most this long, then written as is."""
READ_SIZE = 65536


@dataclass
class _Stream:
    name: Literal["out", "err"]
    path: Path
    fd: int | None = None
    carry: bytearray = field(default_factory=bytearray)
    """The start of a line whose newline has not arrived yet (timestamp mode only)."""
    started: bool = False
    """Part of the carried line was already written, with its prefix."""


class InstanceOutput:
    """The `OutputSink` of one instance: its two pipes, read on the event loop.

    Bytes go to the files unchanged (invalid UTF-8 included). With `timestamp_format` (a
    strftime format) every line is prefixed with the time it was read and `": "`; then
    whole lines are written, so instances sharing a file (`merge_logs`) do not cut into
    each other's lines. `on_line(stream, chunk)` sees every chunk as read ("out"/"err").
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writer: LogWriter,
        out_path: Path,
        err_path: Path,
        *,
        timestamp_format: str | None = None,
        on_line: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._loop = loop
        self._writer = writer
        self.out_path = out_path
        self.err_path = err_path
        self._format = timestamp_format
        self._on_line = on_line
        self._streams = (_Stream("out", out_path), _Stream("err", err_path))

    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        for stream, fd in zip(self._streams, (stdout_fd, stderr_fd), strict=True):
            if any(s.fd == fd for s in self._streams):  # one pipe for both: read it once
                continue
            os.set_blocking(fd, False)
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

    def _readable(self, stream: _Stream) -> None:
        if stream.fd is None:
            return
        try:
            data = os.read(stream.fd, READ_SIZE)
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
        out = data if self._format is None else self._stamp(stream, data)
        if out:
            self._writer.submit(stream.path, out)

    def _close_stream(self, stream: _Stream) -> None:
        if stream.fd is not None:
            fd, stream.fd = stream.fd, None
            self._loop.remove_reader(fd)
            with contextlib.suppress(OSError):  # nothing useful to do about it
                os.close(fd)
        if stream.carry:
            # End the line, so that the next run's first line gets a prefix of its own.
            prefix = b"" if stream.started else self._prefix()
            self._writer.submit(stream.path, prefix + bytes(stream.carry) + b"\n")
            stream.carry.clear()
            stream.started = False

    def _prefix(self) -> bytes:
        assert self._format is not None
        return (datetime.now().strftime(self._format) + ": ").encode()

    def _stamp(self, stream: _Stream, data: bytes) -> bytes:
        """Prefix every complete line; carry an unfinished one to the next chunk."""
        prefix = self._prefix()  # one clock read per chunk: its lines arrived together
        out = bytearray()
        end = data.rfind(b"\n")
        if end >= 0:
            complete = bytes(stream.carry) + data[: end + 1] if stream.carry else data[: end + 1]
            # split, not splitlines: a lone \r (progress bars) does not end a line.
            body = (b"\n" + prefix).join(complete.split(b"\n")[:-1]) + b"\n"
            if not stream.started:
                out += prefix
            out += body
            stream.carry = bytearray(data[end + 1 :])
            stream.started = False
        else:
            stream.carry += data
        if len(stream.carry) > MAX_PARTIAL_LINE:
            # A giant line: write what we have so memory stays bounded; the rest of the
            # line follows later without a second prefix.
            if not stream.started:
                out += prefix
            out += stream.carry
            stream.carry = bytearray()
            stream.started = True
        return bytes(out)
