"""The last lines of log files, read from their end (the `tail` command).

Runs in a worker thread, never on the event loop. A file is read backwards in blocks and
at most SCAN_MAX bytes of it, so neither a huge file nor one giant line costs more than
that; a line longer than MAX_LINE keeps its start and gets CUT_MARKER. The answer must
fit in one protocol message, so every file also has a share of a byte budget.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024
"""A longer line is cut to its first MAX_LINE bytes, then CUT_MARKER."""
SCAN_MAX = 16 * 1024 * 1024
"""Bytes read from the end of one file at most."""
CUT_MARKER = " [… line cut: {size} bytes]"
TOO_LONG = "[… the last line is longer than {scan} bytes and is not shown]"


@dataclass(frozen=True)
class Source:
    """One log file of one instance."""

    name: str
    instance: int
    stream: str
    path: Path


def _cost(text: str) -> int:
    """Bytes `text` takes as a JSON string in a message."""
    return len(json.dumps(text, ensure_ascii=False).encode())


def tail_file(path: Path, count: int, budget: int, overhead: int = 0) -> list[str]:
    """The last `count` lines of `path`, oldest first, whose JSON cost (plus `overhead`
    per line) stays within `budget`. A missing file, a FIFO or a device has no lines.

    Raises OSError when the file exists but cannot be read (a symlink is refused, as
    the log writer refuses to write through one).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or count <= 0:
            return []
        return _scan(fd, info.st_size, count, budget, overhead)
    finally:
        os.close(fd)


def _scan(fd: int, size: int, count: int, budget: int, overhead: int) -> list[str]:
    if size == 0:
        return []
    lines: list[str] = []  # newest first
    spent = 0
    # The newline ending the file ends the last line; it does not start another one.
    pos = size - 1 if os.pread(fd, 1, size - 1) == b"\n" else size
    head = b""  # the first MAX_LINE bytes (so far) of the line being assembled
    length = 0  # its whole length so far

    def emit(data: bytes, total: int) -> bool:
        """Keep one line; False once no more is wanted."""
        nonlocal spent
        text = data.decode("utf-8", "replace")
        if total > MAX_LINE:
            text += CUT_MARKER.format(size=total)
        cost = _cost(text) + overhead
        if spent + cost > budget:
            return False
        spent += cost
        lines.append(text)
        return len(lines) < count

    while pos > 0:
        if size - pos >= SCAN_MAX:
            # The line being assembled may start further back: its start is unknown.
            if not lines:
                emit(TOO_LONG.format(scan=SCAN_MAX).encode(), 0)
            return lines[::-1]
        step = min(BLOCK, pos)
        pos -= step
        block = os.pread(fd, step, pos)
        if len(block) < step:  # truncated (flushed, rotated) while we read
            return lines[::-1]
        end = len(block)
        while True:
            newline = block.rfind(b"\n", 0, end)
            piece = block[newline + 1 : end]
            head = (piece + head)[:MAX_LINE]
            length += len(piece)
            if newline < 0:
                break
            if not emit(head, length):
                return lines[::-1]
            head, length, end = b"", 0, newline
    emit(head, length)  # the file's first line
    return lines[::-1]


def read_tails(sources: list[Source], count: int, budget: int) -> list[dict[str, Any]]:
    """`tail_file` of every source, each with an equal share of `budget`, as entries
    {"name", "instance", "stream", "line"} in the order of `sources`."""
    if not sources:
        return []
    share = budget // len(sources)
    entries: list[dict[str, Any]] = []
    for source in sources:
        shape = {"name": source.name, "instance": source.instance, "stream": source.stream}
        overhead = len(json.dumps({**shape, "line": ""}, ensure_ascii=False).encode()) + 1
        for line in tail_file(source.path, count, share, overhead):
            entries.append({**shape, "line": line})
    return entries
