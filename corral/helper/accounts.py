"""A tenant's system user and group: useradd, userdel, groupdel, run with argument lists
(never a shell), a fixed PATH and environment; the name was checked by TENANT_NAME_RE."""

from __future__ import annotations

import grp
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.helper.config import TOOL_PATH, ConfigError
from corral.protocol.wire import ErrorCode, ProtocolError

SHELL = "/usr/sbin/nologin"
COMMENT = "corral tenant"
_TOOL_ENV = {"PATH": TOOL_PATH, "LANG": "C", "LC_ALL": "C"}
_TOOL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Tools:
    useradd: str
    userdel: str
    groupdel: str

    @classmethod
    def find(cls) -> Tools:
        found = {name: shutil.which(name, path=TOOL_PATH) for name in cls.__dataclass_fields__}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not found in {TOOL_PATH}")
        return cls(**{name: str(path) for name, path in found.items()})


def taken(name: str) -> str | None:
    """Why `name` cannot become a new tenant's user and group, or None."""
    try:
        pwd.getpwnam(name)
        return f"a user named {name!r} already exists"
    except KeyError:
        pass
    try:
        grp.getgrnam(name)
        return f"a group named {name!r} already exists"
    except KeyError:
        return None


def _run(argv: list[str]) -> None:
    try:
        result = subprocess.run(
            argv,
            env=_TOOL_ENV,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProtocolError(ErrorCode.INTERNAL, f"{Path(argv[0]).name} failed: {exc}") from None
    if result.returncode != 0:
        text = " ".join(result.stderr.decode(errors="replace").split()) or "no message"
        raise ProtocolError(
            ErrorCode.INTERNAL,
            f"{Path(argv[0]).name} failed (exit status {result.returncode}): {text}",
        )


def add_user(tools: Tools, name: str, home: Path) -> pwd.struct_passwd:
    """Create the user `name` with its own group `name`; its home is made by `homes`.

    A regular account (uid from UID_MIN up), not --system: tenants are customers, the
    system range is small, and a package that later runs `adduser --system NAME` must
    fail rather than adopt a tenant's account. No subordinate uids or gids (they would
    let the tenant map id ranges in user namespaces)."""
    _run(
        [
            tools.useradd,
            "--user-group",
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            "--shell",
            SHELL,
            "--comment",
            COMMENT,
            "--home-dir",
            str(home),
            "--no-create-home",
            "--",
            name,
        ]
    )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ProtocolError(
            ErrorCode.INTERNAL, f"useradd succeeded but user {name!r} cannot be found"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ProtocolError(ErrorCode.INTERNAL, f"useradd gave {name!r} uid or gid 0")
    return entry


def delete_user(tools: Tools, name: str) -> None:
    """Delete the user and its group (userdel removes a user group only when it is empty
    of other members and USERGROUPS_ENAB is on: groupdel then finishes the job)."""
    try:
        pwd.getpwnam(name)
        _run([tools.userdel, "--", name])
    except KeyError:
        pass
    try:
        grp.getgrnam(name)
        _run([tools.groupdel, "--", name])
    except KeyError:
        pass
