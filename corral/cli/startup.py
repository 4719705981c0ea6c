"""`corral startup` / `corral unstartup`: a systemd unit that runs the daemon at boot.

The unit runs the daemon in the foreground. The daemon restores its saved state by itself
when it starts, and stops its apps gracefully on SIGTERM, so the unit needs no ExecStop:
systemd's SIGTERM (to the main process only, `KillMode=mixed`) is the graceful shutdown,
and whatever is left after `TimeoutStopSec` is SIGKILLed.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.atomic import write_atomic
from corral.homedir import HOME_ENV

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNNING = Path("/run/systemd/system")
LINGER_DIR = Path("/var/lib/systemd/linger")
SYSTEMCTL_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30

# Names that are safe both as a unit name part and as a `User=` value.
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Words that systemd would split, unquote, unescape or treat specially if left bare.
_NEEDS_QUOTES_RE = re.compile(r"[\s\"'\\;\x00-\x1f\x7f]|^$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class StartupError(Exception):
    """The unit could not be written, enabled or removed; the message says why."""


@dataclass(frozen=True)
class InstallResult:
    path: Path
    commands: list[list[str]]
    """The systemctl commands that enable the unit: run already if `ran`, else to print."""
    ran: bool
    notes: list[str] = field(default_factory=list)
    """Advice for the user (for example: enable lingering for a user unit)."""


@dataclass(frozen=True)
class RemoveResult:
    path: Path
    removed: bool
    """False when there was no unit to remove."""
    commands: list[list[str]]
    ran: bool


def render_unit(
    *,
    corral_argv: list[str],
    home: Path,
    user: str,
    system: bool,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
) -> str:
    """The unit file text. `corral_argv` runs the daemon in the foreground."""
    if not corral_argv or not os.path.isabs(corral_argv[0]):
        raise StartupError("the daemon command must start with an absolute path")
    _check_user(user)
    service = [
        "[Unit]",
        f"Description=corral process manager ({_escape_specifiers(user)})",
    ]
    if system:
        service += ["Wants=network-online.target", "After=network-online.target"]
    service += [
        "",
        "[Service]",
        "Type=simple",
    ]
    if system:
        service.append(f"User={user}")
    service += [
        f"Environment={_quote_env(HOME_ENV, str(home))}",
        f"ExecStart={' '.join(_quote_exec_word(w) for w in corral_argv)}",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_timeout}",
        "Restart=on-failure",
        "RestartSec=2",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
    ]
    return "\n".join(service) + "\n"


def unit_name(*, system: bool, user: str) -> str:
    # System units carry the user: one corral per user on the same machine.
    if system:
        _check_user(user)
        return f"corral-{user}.service"
    return "corral.service"


def unit_path(*, system: bool, user: str, unit_dir: Path | None) -> Path:
    """Where the unit goes: `unit_dir` if given, else systemd's folder for its kind."""
    name = unit_name(system=system, user=user)
    if unit_dir is not None:
        return unit_dir / name
    if system:
        return SYSTEM_UNIT_DIR / name
    return _user_config_dir() / "systemd" / "user" / name


def install_unit(
    *,
    corral_argv: list[str],
    home: Path,
    user: str,
    system: bool,
    unit_dir: Path | None = None,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
) -> InstallResult:
    """Write the unit, then enable it if systemd runs here (and `unit_dir` is not set)."""
    text = render_unit(
        corral_argv=corral_argv, home=home, user=user, system=system, stop_timeout=stop_timeout
    )
    path = unit_path(system=system, user=user, unit_dir=unit_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0644 like every unit: it holds no secrets (no environment but CORRAL_HOME).
        write_atomic(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        hint = " (a system unit needs root)" if system and isinstance(exc, PermissionError) else ""
        raise StartupError(f"cannot write {path}: {exc.strerror}{hint}") from None
    name = unit_name(system=system, user=user)
    commands = [_systemctl(system, "daemon-reload"), _systemctl(system, "enable", name)]
    ran = _should_run(unit_dir)
    if ran:
        _run_all(commands)
    return InstallResult(path, commands, ran, _linger_notes(system=system, user=user))


def remove_unit(*, system: bool, user: str, unit_dir: Path | None = None) -> RemoveResult:
    """Disable (if systemd runs here) and delete the unit. A missing unit is reported.

    The running daemon is left alone: removing the boot unit must not stop the apps.
    """
    path = unit_path(system=system, user=user, unit_dir=unit_dir)
    if not path.exists():
        return RemoveResult(path, removed=False, commands=[], ran=False)
    name = unit_name(system=system, user=user)
    ran = _should_run(unit_dir)
    # `disable` reads the unit's [Install] section, so it runs before the file goes.
    disable = [_systemctl(system, "disable", name)]
    if ran:
        _run_all(disable)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot remove {path}: {exc.strerror}") from None
    reload = [_systemctl(system, "daemon-reload")]
    if ran:
        _run_all(reload)
    return RemoveResult(path, removed=True, commands=disable + reload, ran=ran)


def _should_run(unit_dir: Path | None) -> bool:
    # A unit written elsewhere (tests, --unit-dir) is not systemd's business yet.
    return unit_dir is None and SYSTEMD_RUNNING.is_dir()


def _systemctl(system: bool, *args: str) -> list[str]:
    return ["systemctl", *([] if system else ["--user"]), *args]


def _run_all(commands: list[list[str]]) -> None:
    for argv in commands:
        shown = " ".join(argv)
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SYSTEMCTL_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise StartupError(f"`{shown}` failed: systemctl not found") from None
        except subprocess.TimeoutExpired:
            raise StartupError(f"`{shown}` timed out after {SYSTEMCTL_TIMEOUT:g} s") from None
        if done.returncode != 0:
            detail = done.stderr.strip() or f"exit status {done.returncode}"
            raise StartupError(f"`{shown}` failed: {detail}")


def _linger_notes(*, system: bool, user: str) -> list[str]:
    """A user manager starts at boot only for users with lingering enabled."""
    if system or (LINGER_DIR / user).exists():
        return []
    return [
        "a user unit starts at boot only if lingering is enabled for the user: "
        f"run `loginctl enable-linger {user}`"
    ]


def _user_config_dir() -> Path:
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    raw = os.environ.get("XDG_CONFIG_HOME", "")
    if raw and os.path.isabs(raw):
        return Path(raw)
    return Path.home() / ".config"


def _check_user(user: str) -> None:
    if not _USER_RE.fullmatch(user):
        raise StartupError(f"unsupported user name for a unit: {user!r}")


def _escape_specifiers(text: str) -> str:
    # systemd expands %-specifiers in nearly every setting.
    return text.replace("%", "%%")


def _quote(text: str) -> str:
    """A double-quoted systemd word (C-style escapes inside the quotes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped)
    return f'"{escaped}"'


def _quote_exec_word(word: str) -> str:
    """One argument of ExecStart: `$` would expand a variable and `%` a specifier."""
    word = _escape_specifiers(word).replace("$", "$$")
    return _quote(word) if _NEEDS_QUOTES_RE.search(word) else word


def _quote_env(name: str, value: str) -> str:
    """One `Environment=` assignment (no `$` expansion there, but specifiers and quotes)."""
    assignment = _escape_specifiers(f"{name}={value}")
    return _quote(assignment) if _NEEDS_QUOTES_RE.search(assignment) else assignment
