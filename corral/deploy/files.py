"""Files of the deploy folders: removing trees, handing them to the app's user. Crash-safe
writes are the daemon's own (`corral.core.atomic`, a leaf module)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from corral.core.atomic import fsync_dir, write_atomic

__all__ = ["chown_tree", "fsync_dir", "remove_tree", "write_atomic"]


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
