"""The helper's settings, checked once at start: a mistake is one line and exit status 2,
never a helper that runs half-configured."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.homedir import SUN_PATH_MAX

SOCKET_TAIL = "/.corral/corral.sock"
LONGEST_TENANT = 31
"""TENANT_NAME_RE allows at most 31 characters."""

TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH for the account tools and probes: the helper never uses the caller's PATH."""


class ConfigError(Exception):
    """A setting the helper cannot run with; the message is one line for the admin."""


@dataclass(frozen=True)
class HelperConfig:
    panel_user: str
    panel_uid: int
    panel_gid: int
    """The panel user's primary group: the group of every tenant home and `.corral`."""
    socket: Path
    tenants_dir: Path
    state_dir: Path
    python: Path
    """The interpreter tenant daemons run with (tenants must be able to execute it)."""
    python_path: tuple[Path, ...] = ()

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "tenants.json"

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.log"

    def home_of(self, tenant: str) -> Path:
        return self.tenants_dir / tenant


def panel_account(name: str) -> pwd.struct_passwd:
    """The panel's user: it must exist, not be root, and have a group of its own (every
    tenant home is open to that group)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--panel-user: no such user {name!r}") from None
    if entry.pw_uid == 0:
        raise ConfigError("--panel-user must not be root: the panel runs unprivileged")
    gid = entry.pw_gid
    sharing = sorted(
        {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid != entry.pw_uid}
    )
    try:
        sharing += sorted(set(grp.getgrgid(gid).gr_mem) - {entry.pw_name, *sharing})
    except KeyError:
        raise ConfigError(f"--panel-user: {name}'s primary group {gid} does not exist") from None
    if sharing:
        raise ConfigError(
            f"--panel-user: {name}'s primary group (gid {gid}) is shared with "
            f"{', '.join(sharing)}; tenant homes are open to that group, so give the panel "
            "user a group of its own"
        )
    return entry


def prepare_dir(path: Path, mode: int, option: str) -> Path:
    """`path` as a root-owned directory nobody else can write, created with `mode` (and
    missing parents root 0755) if it does not exist yet."""
    if not path.is_absolute():
        raise ConfigError(f"{option}: {path} is not an absolute path")
    if not os.path.lexists(path):
        try:
            _make_dirs(path, mode)
        except OSError as exc:
            raise ConfigError(f"{option}: cannot create {path}: {exc.strerror or exc}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot use {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{option}: {path} is a symbolic link; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{option}: {path} is not a directory")
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise ConfigError(
            f"{option}: {path} must be owned by root and writable by nobody else "
            f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
        )
    return path


def _make_dirs(path: Path, mode: int) -> None:
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for folder in reversed(missing):
        os.mkdir(folder, 0o755 if folder != path else mode)
        os.chmod(folder, 0o755 if folder != path else mode)  # the umask may have cut it


def check_tenants_dir(path: Path) -> None:
    """Tenants reach their home through it: others may traverse it and every parent; their
    socket path must fit a unix socket address."""
    longest = len(os.fsencode(path)) + 1 + LONGEST_TENANT + len(SOCKET_TAIL)
    if longest > SUN_PATH_MAX:
        raise ConfigError(
            f"--tenants-dir: {path} is too long: a tenant's socket "
            f"({path}/<name>{SOCKET_TAIL}) could take {longest} bytes, more than the "
            f"{SUN_PATH_MAX} of a unix socket address"
        )
    blocked = not_traversable(path)
    if blocked is not None:
        raise ConfigError(f"--tenants-dir: tenants cannot reach {path}: {blocked}")


def not_traversable(path: Path) -> str | None:
    """Why another uid cannot reach `path` (a directory on the way without x for others)."""
    for folder in (path, *path.parents):
        try:
            mode = os.stat(folder).st_mode
        except OSError as exc:
            return f"{folder}: {exc.strerror or exc}"
        if stat.S_ISDIR(mode) and not mode & 0o001:
            return f"{folder} is not searchable by other users (mode {stat.S_IMODE(mode):04o})"
    return None


def check_python(python: Path, python_path: tuple[Path, ...]) -> None:
    """Tenant daemons run `python -m corral.core.daemon` as their own uid: the interpreter
    must be reachable and executable by others, and corral importable with it (probed as
    the user nobody when it exists)."""
    if not python.is_absolute():
        raise ConfigError(f"--python: {python} is not an absolute path")
    for folder in python_path:
        if not folder.is_absolute() or not folder.is_dir():
            raise ConfigError(f"--python-path: {folder} is not an absolute path to a directory")
    for candidate in (python, Path(os.path.realpath(python))):
        blocked = not_traversable(candidate.parent)
        if blocked is not None:
            raise ConfigError(f"--python: tenants cannot run {python}: {blocked}")
    try:
        mode = os.stat(python).st_mode
    except OSError as exc:
        raise ConfigError(f"--python: {python}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode) or not mode & 0o001:
        raise ConfigError(f"--python: {python} is not a file other users may execute")
    _probe(python, python_path)


def _probe(python: Path, python_path: tuple[Path, ...]) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return  # nobody to try as: the mode checks above are all we can do
    env = {"PATH": TOOL_PATH, "LANG": "C.UTF-8"}
    if python_path:
        env["PYTHONPATH"] = ":".join(str(p) for p in python_path)
    try:
        result = subprocess.run(
            [str(python), "-c", "import corral.core.daemon"],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"--python: tenants cannot run {python}: {exc}") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise ConfigError(
            f"--python: {python} cannot import corral when run by another user "
            f"(tried as nobody: {lines[-1]}); give --python or --python-path"
        )
