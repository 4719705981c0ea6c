"""Keeping a tenant's paths inside the tenant's home (SPEC 2.2), for the panel and the daemon.

`confine` checks a path a user typed: resolved with its symlinks, it must lie inside the
(resolved) home. That answers "is this acceptable?" for a form. Between that check and a
later use, the tenant can still swap a directory for a symlink; `open_confined` is the
race-free way for the panel itself to open a tenant's file: it walks the path one
component at a time from a descriptor of the home, refusing every symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Literal


class PathOutsideHome(ValueError):
    """A path that is not acceptable; the message says which one and why."""


def _real_home(home: Path) -> Path:
    try:
        return Path(os.path.realpath(home, strict=True))
    except OSError as exc:
        raise PathOutsideHome(f"the home {str(home)!r} is not usable: {exc.strerror}") from None


def _check_text(user_path: object) -> str:
    if not isinstance(user_path, str) or not user_path.strip():
        raise PathOutsideHome("a path is required")
    if "\x00" in user_path:
        raise PathOutsideHome(f"{user_path!r} contains a NUL character")
    try:
        os.fsencode(user_path)
    except UnicodeError:  # a lone surrogate, from a JSON "\ud800" escape say
        raise PathOutsideHome(f"{user_path!r} is not a valid file name") from None
    return user_path


def _resolve(path: str, user_path: str, must_exist: bool) -> Path:
    try:
        return Path(os.path.realpath(path, strict=must_exist))
    except FileNotFoundError:
        raise PathOutsideHome(f"{user_path!r} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathOutsideHome(f"{user_path!r} is a loop of symbolic links") from None
        reason = exc.strerror or str(exc)
        raise PathOutsideHome(f"{user_path!r} cannot be used: {reason}") from None


def confine(
    home: Path,
    user_path: str,
    *,
    base: Path | None = None,
    must_exist: bool = False,
    kind: Literal["file", "dir", "any"] = "any",
) -> Path:
    """The resolved absolute path of `user_path`, which must lie inside `home`.

    A relative path is taken from `base` (default: the home); `~` is not expanded.
    Symlinks are followed (so one pointing out is refused), `..` is resolved. With
    `must_exist` the path must exist; `kind` then (or whenever it exists) says whether it
    must be a regular file or a directory.
    """
    text = _check_text(user_path)
    root = _real_home(home)
    start = root if base is None else Path(os.path.realpath(base))
    resolved = _resolve(os.path.join(start, text), text, must_exist)
    if not resolved.is_relative_to(root):
        raise PathOutsideHome(f"{text!r} is outside your home ({root}): it leads to {resolved}")
    if kind == "file" and resolved.exists() and not resolved.is_file():
        raise PathOutsideHome(f"{text!r} is not a regular file")
    if kind == "dir" and resolved.exists() and not resolved.is_dir():
        raise PathOutsideHome(f"{text!r} is not a directory")
    return resolved


def _components(home: Path, root: Path, relative: str) -> list[str]:
    """The names to walk from the home: no `..`, no empty path."""
    text = _check_text(relative)
    if os.path.isabs(text):
        path = Path(os.path.normpath(text))
        # Under the resolved home (what confine returns), or the home as given.
        for prefix in (root, Path(os.path.abspath(home))):
            if path.is_relative_to(prefix):
                text = str(path.relative_to(prefix))
                break
        else:
            raise PathOutsideHome(f"{relative!r} is outside your home ({root})")
    names = [n for n in text.split("/") if n not in ("", ".")]
    if ".." in names:
        raise PathOutsideHome(f"{relative!r} must not contain '..'")
    if not names:
        raise PathOutsideHome(f"{relative!r} names the home itself, not a file in it")
    return names


def _refuse_if_link(name: str, parent_fd: int, relative: str, exc: OSError) -> None:
    """Turn the error of an O_NOFOLLOW open into PathOutsideHome if it met a symlink."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise PathOutsideHome(
            f"{relative!r} goes through a symbolic link ({name!r}); not allowed here"
        ) from exc


def open_confined(home: Path, relative: str, flags: int, mode: int = 0o600) -> int:
    """Open `relative` (or an absolute path inside the home) without following any symlink.

    Returns a file descriptor (the caller closes it). A symlink anywhere in the path, even
    one swapped in after a check, raises PathOutsideHome; so does a FIFO, socket or device
    (opening those could block or reach outside). Other errors (a missing file, EACCES)
    come as the OSError they are. The home itself may be a symlink: it is trusted.
    """
    root = _real_home(home)
    names = _components(home, root, relative)
    directory_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            try:
                next_fd = os.open(name, directory_flags, dir_fd=fd)
            except OSError as exc:
                _refuse_if_link(name, fd, relative, exc)
                raise
            os.close(fd)
            fd = next_fd
        # O_NONBLOCK so that a FIFO cannot hang the open; it is cleared again below.
        final_flags = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            file_fd = os.open(names[-1], final_flags, mode, dir_fd=fd)
        except OSError as exc:
            _refuse_if_link(names[-1], fd, relative, exc)
            raise
    finally:
        os.close(fd)
    try:
        _check_opened(file_fd, relative)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(file_fd, True)
    except BaseException:
        os.close(file_fd)
        raise
    return file_fd


def _check_opened(fd: int, relative: str) -> None:
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise PathOutsideHome(f"{relative!r} is not a regular file")
