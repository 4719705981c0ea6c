"""Crash-safe writes for the deploy files (the library does not import corral.core)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: an O_EXCL temp file, fsync, rename, fsync the folder."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a release or a partial build, even with read-only folders in it."""

    def retry(function: Any, name: str, exc: Any) -> None:
        if os.geteuid() == 0:  # root is never refused for modes; never chmod what it finds
            raise exc[1]
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            mode = os.lstat(parent).st_mode
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            function(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give a whole tree to uid:gid without following symlinks (lchown)."""
    os.lchown(path, uid, gid)
    for folder, dirs, names in os.walk(path):
        for name in (*dirs, *names):
            os.lchown(os.path.join(folder, name), uid, gid)
