"""Tenant homes on disk: `<tenants_dir>/<name>` 0750 owner tenant, group the panel's;
`.corral` inside 02750 (setgid: the daemon's socket gets the panel's group).

Root only ever touches a home through file descriptors opened without following symlinks
(the tenant owns the home and may put anything in it); the tenants dir itself is root's,
so the home's own entry cannot be swapped. Deleting a home's contents is done by a child
running as the tenant: root never walks a tree the tenant controls.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from corral.helper.config import TOOL_PATH
from corral.protocol.wire import ErrorCode, ProtocolError

HOME_MODE = 0o750
CORRAL_DIR = ".corral"
CORRAL_DIR_MODE = 0o2750
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DELETE_TIMEOUT = 300.0

# Run as the tenant by `delete_contents`: make every directory writable again (the tenant
# may have locked some), then delete everything below the home, never following symlinks.
_DELETE_SCRIPT = r"""
import os, shutil, sys
home = sys.argv[1]
os.chmod(home, 0o700)
for root, dirs, files in os.walk(home):
    for d in dirs:
        path = os.path.join(root, d)
        if not os.path.islink(path):
            os.chmod(path, 0o700)
for entry in os.scandir(home):
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)
"""


@contextlib.contextmanager
def _open_dir(path: Path | str, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def make_home(home: Path, uid: int, panel_gid: int) -> None:
    """Create the home and its `.corral`. The home must not exist yet (FileExistsError,
    nothing made); on any later failure what was made is removed again."""
    os.mkdir(home, 0o700)
    try:
        with _open_dir(home) as home_fd:
            os.mkdir(CORRAL_DIR, 0o700, dir_fd=home_fd)
            with _open_dir(CORRAL_DIR, home_fd) as corral_fd:
                os.fchown(corral_fd, uid, panel_gid)
                os.fchmod(corral_fd, CORRAL_DIR_MODE)
            # Last: until here the home is root's 0700, nobody else can enter it.
            os.fchown(home_fd, uid, panel_gid)
            os.fchmod(home_fd, HOME_MODE)
    except BaseException:
        discard_new_home(home)
        raise


def ensure_corral_dir(home: Path, uid: int, panel_gid: int) -> None:
    """Before a daemon start: the home must be the tenant's directory; `.corral` is made
    again if the tenant deleted it, and given back its group and mode when it is the
    tenant's own directory. Anything else there is refused (CONFLICT)."""
    try:
        with _open_dir(home) as home_fd:
            if os.fstat(home_fd).st_uid != uid:
                raise ProtocolError(ErrorCode.CONFLICT, f"{home} is not owned by uid {uid}")
            with contextlib.suppress(FileExistsError):
                os.mkdir(CORRAL_DIR, 0o700, dir_fd=home_fd)
                with _open_dir(CORRAL_DIR, home_fd) as fresh:
                    os.fchown(fresh, uid, panel_gid)
            with _open_dir(CORRAL_DIR, home_fd) as corral_fd:
                st = os.fstat(corral_fd)
                if st.st_uid != uid:
                    raise ProtocolError(
                        ErrorCode.CONFLICT, f"{home / CORRAL_DIR} is not owned by uid {uid}"
                    )
                if st.st_gid != panel_gid:
                    os.fchown(corral_fd, uid, panel_gid)
                if stat.S_IMODE(st.st_mode) != CORRAL_DIR_MODE:
                    os.fchmod(corral_fd, CORRAL_DIR_MODE)
    except OSError as exc:
        raise ProtocolError(
            ErrorCode.CONFLICT,
            f"{home / CORRAL_DIR} is not a usable directory ({exc.strerror or exc})",
        ) from None


def delete_contents(home: Path, uid: int, gid: int, python: Path) -> None:
    """Delete everything inside the home, as the tenant (uid, gid, no other groups)."""
    try:
        result = subprocess.run(
            [str(python), "-I", "-c", _DELETE_SCRIPT, str(home)],
            user=uid,
            group=gid,
            extra_groups=[],
            env={"PATH": TOOL_PATH, "LANG": "C.UTF-8"},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=_DELETE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProtocolError(ErrorCode.INTERNAL, f"cannot delete {home}: {exc}") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise ProtocolError(ErrorCode.INTERNAL, f"cannot delete {home}: {lines[-1]}")


def remove_home(home: Path, uid: int, gid: int, python: Path) -> None:
    """Delete the home: its contents as the tenant, then the (empty) directory as root."""
    try:
        st = os.lstat(home)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise ProtocolError(ErrorCode.CONFLICT, f"{home} is not a directory; left alone")
    if st.st_uid == uid:
        delete_contents(home, uid, gid, python)
    try:
        os.rmdir(home)
    except OSError as exc:
        raise ProtocolError(
            ErrorCode.INTERNAL, f"cannot delete {home}: {exc.strerror or exc}"
        ) from None


def retire_home(home: Path) -> None:
    """A home kept after its tenant is removed: root's and closed (0700), so that a user
    who later gets the same uid does not get these files."""
    try:
        with _open_dir(home) as fd:
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o700)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ProtocolError(
            ErrorCode.INTERNAL, f"cannot close the kept home {home}: {exc.strerror or exc}"
        ) from None


def discard_new_home(home: Path) -> None:
    """Undo `make_home` after a failed create: the tenant never ran, so the home holds only
    what `make_home` put there."""
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(home / CORRAL_DIR)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(home)
