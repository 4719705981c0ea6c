"""Extract a `git archive` tar stream into a new release folder, never outside it.

Python 3.11.4+ has tarfile's "data" filter, which does exactly this, and it is used when
present. Debian 12's Python is 3.11.2, without it: there every member is checked the same
way before it is written (no absolute or `..` escape, no link leading out of the release,
no special file, no setuid bits or group/other write), one member at a time, so a link
extracted earlier cannot carry a later file outside.
"""

from __future__ import annotations

import os
import tarfile
from typing import IO

from corral.deploy.process import StepFailed

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class UnsafeMember(Exception):
    """A member that would leave the release (the fallback's FilterError)."""


_REFUSED: tuple[type[Exception], ...] = (UnsafeMember,) + (
    (tarfile.FilterError,) if HAS_DATA_FILTER else ()
)


def extract_release(
    archive: IO[bytes], path: os.PathLike[str] | str, *, checked: bool = False
) -> None:
    """Extract into the (empty) release folder `path`; StepFailed("checkout") on a member
    that would land outside it. `checked` forces the member-by-member check (tests)."""
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            if HAS_DATA_FILTER and not checked:
                tar.extractall(path, filter="data")
            else:
                _extract_checked(tar, os.path.realpath(path))
    except _REFUSED as exc:
        raise StepFailed("checkout", f"refused an unsafe file in the repository: {exc}") from None
    except tarfile.TarError as exc:
        raise StepFailed("checkout", f"cannot read the archive: {exc}") from None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _extract_checked(tar: tarfile.TarFile, root: str) -> None:
    for member in tar:
        name = member.name.lstrip("/" + os.sep)  # as the data filter: absolute names land inside
        target = os.path.realpath(os.path.join(root, name))
        if not _inside(target, root):
            raise UnsafeMember(f"{member.name!r} would be extracted outside the release")
        if member.issym():
            if os.path.isabs(member.linkname):
                raise UnsafeMember(f"{member.name!r} is a link to an absolute path")
            pointed = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
            if not _inside(pointed, root):
                raise UnsafeMember(f"{member.name!r} is a link leading outside the release")
        elif member.islnk():
            pointed = os.path.realpath(os.path.join(root, member.linkname.lstrip("/")))
            if not _inside(pointed, root):
                raise UnsafeMember(f"{member.name!r} is a hard link leading outside the release")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeMember(f"{member.name!r} is a special file")
        member.name = name
        # No owner, times or modes from the archive (a root daemon would chown to them);
        # the mode is set below like the data filter's: no setuid/setgid/sticky, no
        # group/other write, and a file is executable only if its owner could execute it.
        if HAS_DATA_FILTER:  # only when forced: our checks stand in for the filter
            tar.extract(member, root, set_attrs=False, filter="fully_trusted")
        else:
            tar.extract(member, root, set_attrs=False)
        if member.isdir():
            os.chmod(target, 0o755)
        elif member.isfile():
            os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)
