"""Crash-safe file writes: readers see either the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync folder.

    The temp file is created with `mode` (O_EXCL, so never someone else's file and never
    more open than `mode`). On any failure it is removed and the old file is left intact.
    """
    folder = path.parent
    tmp = folder / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            # The umask may have narrowed the mode at creation; set it exactly.
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def write_json_atomic(path: Path, obj: Any, mode: int = 0o600, *, indent: bool = True) -> None:
    """`write_atomic` of `obj` as JSON with a trailing newline, indented unless `indent` is
    False: the daemon's state file, rewritten on every change, is written on one line,
    because only the unindented form has json's C encoder (4x faster).

    ASCII-only output: strings holding surrogate escapes (undecodable bytes from an
    environment or a path) are written as \\uXXXX and read back unchanged.
    """
    text = json.dumps(obj, indent=1 if indent else None) + "\n"
    write_atomic(path, text.encode("ascii"), mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(folder: Path) -> None:
    """Make a rename (or link) in `folder` durable: it lives in the folder's entry list."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
