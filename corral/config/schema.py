"""Validation of raw app settings into an `AppConfig`.

Two entry points share one validation table:

* `app_from_mapping`: what a user wrote (config file, CLI flags). PM2 aliases are
  accepted, bare numbers for durations are milliseconds, scripts are looked up.
* `app_from_dict`: what `AppConfig.to_dict()` produced (control requests, saved state).
  Canonical keys only, durations already in seconds, nothing is looked up again.

Every mistake becomes a `ConfigError` naming the source, the app and the key.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from corral.config.errors import ConfigError, UnknownKeyError, short_repr, suggestion
from corral.config.model import NAME_RE, SECRET_NAME_RE, AppConfig
from corral.config.units import parse_duration, parse_signal, parse_size, parse_umask
from corral.core.cron import validate as validate_cron
from corral.core.listen import parse_listen

# PM2 ecosystem spellings of our keys.
ALIASES: dict[str, str] = {
    "node_args": "interpreter_args",
    "interpreterArgs": "interpreter_args",
    "exec_interpreter": "interpreter",
    "err_file": "error_file",
    "err_log": "error_file",
    "max_size": "log_max_size",
    "retain": "log_retain",
    "compress": "log_compress",
    "out_log": "out_file",
    "output": "out_file",
    "combine_logs": "merge_logs",
    "uid": "user",
    "gid": "group",
    "cron": "cron_restart",
    "stop_signal": "kill_signal",
    "cmd": "script",
    "command": "script",
}

# PM2-only keys that mean nothing here: accepted so ecosystem files load, then dropped.
IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "vizion",
        "pmx",
        "automation",
        "source_map_support",
        "namespace",
        "force",
        "treekill",
        "log_file",
        "shutdown_with_message",
        "pid_file",
    }
)

# Keys that are not fields but set one: `time: true` sets log_date_format.
VIRTUAL_KEYS: frozenset[str] = frozenset({"time"})

DEFAULT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
DISCARD = "/dev/null"
"""out_file / error_file value that throws a stream away."""
RLIMIT_SIZES: frozenset[str] = frozenset({"as", "core", "fsize", "stack", "memlock"})
RLIMIT_COUNTS: frozenset[str] = frozenset({"nofile", "nproc", "cpu"})

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
_SHELL_CHARS = frozenset("$`|&;<>(){}\n")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_EXTENSION_INTERPRETERS = {
    ".py": "python3",
    ".js": "node",
    ".mjs": "node",
    ".cjs": "node",
    ".sh": "bash",
    ".rb": "ruby",
    ".php": "php",
    ".pl": "perl",
}
EXTENSION_INTERPRETERS = _EXTENSION_INTERPRETERS
"""The interpreter of a script by its extension (the launch of a git app looks it up)."""
_NAME_HINT = "letters, digits and . _ : - (1 to 80 characters)"


@dataclass
class _Ctx:
    """What a converter needs to know besides the value."""

    canonical: bool
    base_dir: Path
    cwd: Path | None = None
    release: bool = False
    """The app has a git source: script and cwd are inside its release (SPEC 4)."""


Converter = Callable[[Any, _Ctx], Any]


def _expected(what: str, value: object) -> ValueError:
    return ValueError(f"expected {what}, got {short_repr(value)}")


# --- Converters: value -> canonical value, or ValueError("expected ..., got ...") ---


def _optional(convert: Converter) -> Converter:
    def wrapper(value: Any, ctx: _Ctx) -> Any:
        return None if value is None else convert(value, ctx)

    return wrapper


def _bool(value: Any, ctx: _Ctx) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected(what, value)
    return value


def _int_range(low: int, high: int | None) -> Converter:
    what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def convert(value: Any, ctx: _Ctx) -> int:
        number = _int(value, what)
        if number < low or (high is not None and number > high):
            raise _expected(what, value)
        return number

    return convert


def _string(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value:
        raise _expected("a non-empty string", value)
    return value


def _strings(value: Any, ctx: _Ctx) -> list[str]:
    """A string or a list of strings (a lone string is a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise _expected("a string or a list of strings", value)
    return list(items)


def _words(value: Any, ctx: _Ctx) -> list[str]:
    """Arguments: a list of strings, or one string split like a shell would."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise _expected(f"arguments with balanced quotes ({exc})", value) from None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise _expected("a string or a list of strings", value)
    return list(value)


def _duration(value: Any, ctx: _Ctx) -> float:
    return parse_duration(value, bare_seconds=ctx.canonical)


def _size(value: Any, ctx: _Ctx) -> int:
    return parse_size(value)


def _signal(value: Any, ctx: _Ctx) -> str:
    return parse_signal(value)


def _umask(value: Any, ctx: _Ctx) -> int:
    return parse_umask(value)


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Converter:
    table = {c: c for c in choices} | dict(aliases or {})

    def convert(value: Any, ctx: _Ctx) -> str:
        if not isinstance(value, str) or value not in table:
            raise _expected(" or ".join(repr(c) for c in choices), value)
        return table[value]

    return convert


def _instances(value: Any, ctx: _Ctx) -> int:
    """An int; "max" or 0 is one per CPU, -1 is one per CPU but one (at least 1)."""
    what = "a number of instances (1 or more, 'max', 0 = one per CPU, -1 = CPUs - 1)"
    cpus = os.cpu_count() or 1
    if value == "max":
        return cpus
    number = _int(value, what)
    if number == 0:
        return cpus
    if number == -1:
        return max(1, cpus - 1)
    if number < 1:
        raise _expected(what, value)
    return number


def _env_name(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
        raise _expected("a variable name (letters, digits, _; not starting with a digit)", value)
    return value


def _env(value: Any, ctx: _Ctx) -> dict[str, str]:
    """Variables: string values; numbers and booleans become strings (true -> "true")."""
    if not isinstance(value, Mapping):
        raise _expected("a mapping of variable names to values", value)
    env: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            raise ValueError(
                f"variable name {short_repr(name)} is not valid: expected letters, digits"
                " and _, not starting with a digit"
            )
        if isinstance(item, bool):
            env[name] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            env[name] = str(item)
        else:
            raise ValueError(
                f"variable {name!r}: expected a string, number or boolean, got {short_repr(item)}"
            )
    return env


def _env_profiles(value: Any, ctx: _Ctx) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise _expected("a mapping of profile names to variables", value)
    profiles: dict[str, dict[str, str]] = {}
    for name, env in value.items():
        if not isinstance(name, str) or not _PROFILE_RE.match(name):
            raise _expected("profile names of letters, digits and . _ -", name)
        profiles[name] = _env(env, ctx)
    return profiles


def _secret_names(value: Any, ctx: _Ctx) -> list[str]:
    """Names only, never values: an entry is never echoed in an error (it might be one)."""
    if isinstance(value, Mapping):
        raise ValueError(
            "expected a list of secret names, got a mapping: a secret's value never goes "
            "in a config file; set it with `corral secret set APP NAME`"
        )
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a secret name or a list of them")
    names: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not SECRET_NAME_RE.match(item):
            raise ValueError(
                f"entry {i} is not a secret name: expected a variable name (letters, digits"
                " and _, not starting with a digit, at most 128 characters)"
            )
        if item in names:
            raise ValueError(f"secret {item!r} is listed twice")
        names.append(item)
    return names


def _exit_codes(value: Any, ctx: _Ctx) -> list[int]:
    what = "an exit code (0 to 255) or a list of them"
    items = value if isinstance(value, list) else [value]
    codes = [_int(i, what) for i in items]
    if not all(0 <= c <= 255 for c in codes):
        raise _expected(what, value)
    return codes


def _cron(value: Any, ctx: _Ctx) -> str:
    # The schedule's own parser decides: seconds come first in a 6-field expression.
    if not isinstance(value, str) or validate_cron(value) is not None:
        raise _expected("a cron expression like '0 3 * * *'", value)
    return value


def _abs_path(value: Any, ctx: _Ctx) -> str:
    """A path, made absolute against the app's cwd (canonical data is absolute already)."""
    if not isinstance(value, str) or not value:
        raise _expected("a path", value)
    path = os.path.expanduser(value)
    if ctx.canonical and not os.path.isabs(path):
        raise _expected("an absolute path", value)
    return os.path.normpath(os.path.join(ctx.cwd or ctx.base_dir, path))


def _listen(value: Any, ctx: _Ctx) -> list[str]:
    """Addresses the daemon binds for the app; checked here so a typo never reaches a bind."""
    addresses = _strings(value, ctx)
    if ctx.canonical:
        # Already checked where the config was read; in the daemon a host name lookup
        # would block the event loop, and a bad address still fails at bind, clearly.
        return addresses
    for address in addresses:
        parse_listen(address)  # ValueError says what was expected
    return addresses


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _health_check(value: Any, ctx: _Ctx) -> str:
    """tcp://host:port or http://host:port/path, on loopback only: the daemon must not be
    usable to probe other machines."""
    if not isinstance(value, str):
        raise _expected("tcp://127.0.0.1:PORT or http://127.0.0.1:PORT/path", value)
    parsed = urlsplit(value)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in ("tcp", "http") or port is None:
        raise _expected("tcp://127.0.0.1:PORT or http://127.0.0.1:PORT/path", value)
    host = parsed.hostname or ""
    if host not in _LOOPBACK_HOSTS and not host.startswith("127."):
        raise ValueError(
            f"a health check must be on loopback (127.x, ::1, localhost), got {host!r}"
        )
    return value


def _log_path(value: Any, ctx: _Ctx) -> str:
    """A log file; `/dev/null` or PM2's `NULL` discards the stream."""
    if value == "NULL" or value == "/dev/null":
        return DISCARD
    return _abs_path(value, ctx)


def _watch(value: Any, ctx: _Ctx) -> list[str]:
    """true watches the cwd; a path or a list of paths; false or empty is off."""
    if value is None or value is False or value == "" or value == []:
        return []
    if value is True:
        return [str(ctx.cwd or ctx.base_dir)]
    return [_abs_path(p, ctx) for p in _strings(value, ctx)]


def _account(value: Any, ctx: _Ctx) -> str:
    """A user or group: a name, or a numeric id (PM2's uid/gid)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise _expected("a user or group name or id", value)
    return value


def _rlimits(value: Any, ctx: _Ctx) -> dict[str, int]:
    """{limit: value}; sizes accept units (`as: 1G`); -1 or "unlimited" is no limit."""
    if not isinstance(value, Mapping):
        raise _expected("a mapping like {nofile: 4096, as: 1G}", value)
    limits: dict[str, int] = {}
    known = RLIMIT_SIZES | RLIMIT_COUNTS
    for name, item in value.items():
        if name not in known:
            hint = suggestion(str(name), known)
            raise ValueError(f"unknown limit {short_repr(name)}{hint}")
        limits[name] = _rlimit_value(name, item)
    return limits


def _rlimit_value(name: str, value: Any) -> int:
    if value in (-1, "-1", "unlimited", "infinity"):
        return -1
    try:
        if name in RLIMIT_SIZES:
            return parse_size(value)
        number = _int(value, "an integer >= 0")
        if number < 0:
            raise _expected("an integer >= 0", value)
        return number
    except ValueError as exc:
        raise ValueError(f"limit {name!r}: {exc} (or -1 for unlimited)") from None


# Moment.js tokens (PM2's log_date_format) and their strftime equivalents.
_MOMENT_TOKENS = {
    "YYYY": "%Y",
    "YY": "%y",
    "MMMM": "%B",
    "MMM": "%b",
    "MM": "%m",
    "DD": "%d",
    "dddd": "%A",
    "ddd": "%a",
    "HH": "%H",
    "hh": "%I",
    "mm": "%M",
    "ss": "%S",
    "SSS": "%f",  # milliseconds in moment, microseconds in strftime: close enough
    "ZZ": "%z",
    "Z": "%z",
    "A": "%p",
}
_MOMENT_RE = re.compile(r"\[[^\]]*\]|" + "|".join(sorted(_MOMENT_TOKENS, key=len, reverse=True)))


def _log_date_format(value: Any, ctx: _Ctx) -> str:
    """A strftime format. A PM2 (moment.js) format, one without any %, is translated."""
    text = _string(value, ctx)
    if ctx.canonical or "%" in text:
        return text
    return _MOMENT_RE.sub(lambda m: _MOMENT_TOKENS.get(m[0], m[0][1:-1]), text)


def _interpreter(value: Any, ctx: _Ctx) -> str:
    return _string(value, ctx)


# The fields set from a key with a plain converter. name, script and cwd are special.
TABLE: dict[str, Converter] = {
    "args": _words,
    "interpreter": _optional(_interpreter),
    "interpreter_args": _words,
    "instances": _instances,
    "exec_mode": _choice(
        "fork", "cluster", aliases={"fork_mode": "fork", "cluster_mode": "cluster"}
    ),
    "env": _env,
    "env_profiles": _env_profiles,
    "increment_var": _optional(_env_name),
    "port": _optional(_int_range(1, 65535)),
    "instance_var": _env_name,
    "secrets": _secret_names,
    "autorestart": _bool,
    "max_restarts": _int_range(0, None),
    "min_uptime": _duration,
    "restart_delay": _duration,
    "exp_backoff_restart_delay": _optional(_duration),
    "stop_exit_codes": _exit_codes,
    "max_memory_restart": _optional(_size),
    "cron_restart": _optional(_cron),
    "watch": _watch,
    "ignore_watch": _strings,
    "watch_delay": _duration,
    "kill_signal": _signal,
    "kill_timeout": _duration,
    "wait_ready": _bool,
    "listen_timeout": _duration,
    "listen": _listen,
    "health_check": _optional(_health_check),
    "watchdog": _optional(_duration),
    "reload_parallel": _int_range(1, 1000),
    "reload_mode": _choice("graceful", "restart"),
    "merge_logs": _bool,
    "log_date_format": _optional(_log_date_format),
    "out_file": _optional(_log_path),
    "error_file": _optional(_log_path),
    "log_type": _choice("raw", "json"),
    "log_max_size": _optional(_size),
    "log_retain": _optional(_int_range(0, 10_000)),
    "log_compress": _optional(_bool),
    "user": _optional(_account),
    "group": _optional(_account),
    "rlimits": _rlimits,
    "umask": _optional(_umask),
}
SPECIAL_KEYS: frozenset[str] = frozenset({"name", "script", "cwd", "git"})
CANONICAL_KEYS: frozenset[str] = frozenset(AppConfig.field_names())
FILE_KEYS: frozenset[str] = CANONICAL_KEYS | set(ALIASES) | IGNORED_KEYS | VIRTUAL_KEYS


# --- Keys: what the user wrote -> canonical names ---


class _Reporter:
    """Makes ConfigErrors for one app; knows its label once the name is known."""

    def __init__(self, source: str, index: int | None) -> None:
        self.source = source
        self.app = f"apps[{index}]" if index is not None else None

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.source, message, app=self.app, key=key)

    def unknown(
        self, key: object, candidates: frozenset[str], best: str | None = None
    ) -> ConfigError:
        hint = f" (did you mean {best!r}?)" if best else ""
        if isinstance(key, str) and not best:
            hint = suggestion(key, candidates)
        return UnknownKeyError(
            self.source, f"unknown key {short_repr(key)}{hint}", app=self.app, key=str(key)
        )


@dataclass
class _Keys:
    """The raw settings sorted by canonical name, each with the key as written."""

    fields: dict[str, tuple[str, Any]]
    profiles: dict[str, tuple[str, Any]]
    virtual: dict[str, tuple[str, Any]]


def _sort_keys(raw: Mapping[Any, Any], canonical: bool, rep: _Reporter) -> _Keys:
    keys = _Keys({}, {}, {})
    for key, value in raw.items():
        if not isinstance(key, str):
            raise rep.unknown(key, CANONICAL_KEYS if canonical else FILE_KEYS)
        if canonical:
            if key not in CANONICAL_KEYS:
                raise rep.unknown(key, CANONICAL_KEYS, _canonical_spelling(key))
            keys.fields[key] = (key, value)
            continue
        _sort_file_key(key, value, keys, rep)
    return keys


def _canonical_spelling(key: str) -> str | None:
    """The field a file-only key stands for (canonical data must use the field's name)."""
    if key.startswith("env_"):
        return "env_profiles"
    return ALIASES.get(key)


def _sort_file_key(key: str, value: Any, keys: _Keys, rep: _Reporter) -> None:
    if key in IGNORED_KEYS:
        return
    if key in VIRTUAL_KEYS:
        keys.virtual[key] = (key, value)
        return
    if key not in CANONICAL_KEYS and key.startswith("env_"):
        profile = key.removeprefix("env_")
        if not _PROFILE_RE.match(profile):
            raise rep.error(
                key, "expected env_<profile> with a profile name of letters, digits, . _ -"
            )
        keys.profiles[profile] = (key, value)
        return
    name = ALIASES.get(key, key)
    if name not in CANONICAL_KEYS:
        raise rep.unknown(key, FILE_KEYS)
    if name in keys.fields:
        raise rep.error(key, f"sets the same thing as key {keys.fields[name][0]!r}; keep one")
    keys.fields[name] = (key, value)


# --- Names and scripts ---


def _derived_name(script: object) -> str | None:
    """PM2's default name: the basename, without extension, of the command's first word."""
    if not isinstance(script, str) or not script.strip():
        return None
    try:
        words = shlex.split(script)
    except ValueError:
        words = script.split()
    if not words:
        return None
    return Path(words[0].rstrip("/")).stem or None


def peek_name(raw: object) -> str | None:
    """The name an app will get (explicit or derived), without validating anything."""
    if not isinstance(raw, Mapping):
        return None
    if "name" in raw:
        name = raw["name"]
        return name if isinstance(name, str) else None
    for key in ("script", "cmd", "command"):
        if key in raw:
            return _derived_name(raw[key])
    return None


def _name(keys: _Keys, rep: _Reporter) -> str:
    if "name" in keys.fields:
        key, value = keys.fields["name"]
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise rep.error(key, _expected(f"a name of {_NAME_HINT}", value).args[0])
        return value
    if "script" not in keys.fields:
        raise rep.error("script", "missing: every app needs a script")
    key, script = keys.fields["script"]
    name = _derived_name(script)
    if name is None or not NAME_RE.match(name):
        message = f"missing, and no valid name ({_NAME_HINT}) comes from {key!r}; set name"
        raise rep.error("name", message)
    return name


def _program_path(word: str, cwd: Path, path_env: str | None) -> tuple[str, bool] | None:
    """(absolute path, found on PATH) of a file relative to cwd or a program on PATH."""
    candidate = os.path.normpath(os.path.join(cwd, os.path.expanduser(word)))
    if os.path.isdir(candidate):
        raise ValueError(f"{word!r} is a directory, expected a file or program")
    if os.path.isfile(candidate):
        return candidate, False
    if "/" not in word:
        found = shutil.which(word, path=path_env)
        if found is not None:
            return os.path.abspath(found), True
    return None


def _interpreter_for(script: str, interpreter: str | None, on_path: bool) -> str:
    """The interpreter for a script: as given, else by extension, else "none" (exec it)."""
    if interpreter is None:
        ext = os.path.splitext(script)[1].lower()
        interpreter = "none" if on_path else _EXTENSION_INTERPRETERS.get(ext, "none")
    if interpreter == "none" and not os.access(script, os.X_OK):
        raise ValueError(f"{script!r} is not executable; set interpreter")
    return interpreter


def _needs_shell(command: str) -> bool:
    """Pipes, redirections, $VARS, `cmd`, `A=1 prog`: only a shell runs these right."""
    return any(c in _SHELL_CHARS for c in command) or bool(_ASSIGNMENT_RE.match(command))


def _resolve_script(
    script: str, cwd: Path, interpreter: str | None, path_env: str | None = None
) -> tuple[str, list[str], str]:
    """resolve_script, raising ValueError (the caller knows the source and app)."""
    words = [script]
    found = _program_path(script, cwd, path_env)
    if found is None and any(c.isspace() for c in script):
        if _needs_shell(script):
            if interpreter not in (None, "none"):
                raise ValueError("a shell command (pipes, $VARS...) cannot have an interpreter")
            return shutil.which("sh", path=path_env) or "/bin/sh", ["-c", script], "none"
        words = _words(script, _Ctx(canonical=False, base_dir=cwd))
        found = _program_path(words[0], cwd, path_env) if words and words[0] else None
    if found is None:
        raise ValueError(f"no such file or program: {words[0]!r} (looked in {str(cwd)!r} and PATH)")
    path, on_path = found
    return path, words[1:], _interpreter_for(path, interpreter, on_path)


def resolve_script(
    script: str,
    cwd: Path,
    interpreter: str | None,
    *,
    source: str = "command line",
    app: str | None = None,
    path_env: str | None = None,
) -> tuple[str, list[str], str]:
    """(script, leading args, interpreter) for what the user gave as `script`.

    An existing file (relative to cwd) gives its absolute path; a command with spaces is
    split, its first word being the program; a bare word is looked up on PATH. A command
    needing a shell (pipes, $VARS...) runs under `sh -c`. The interpreter is chosen from
    the extension when None, or "none" to exec the file (which must be executable).
    """
    try:
        return _resolve_script(script, cwd, interpreter, path_env)
    except ValueError as exc:
        raise ConfigError(source, str(exc), app=app, key="script") from None


def _check_interpreter(interpreter: str, cwd: Path, path_env: str | None) -> str:
    """An interpreter that exists: a path (made absolute) or a program on PATH."""
    if interpreter == "none":
        return interpreter
    if "/" in interpreter:
        path = os.path.normpath(os.path.join(cwd, os.path.expanduser(interpreter)))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ValueError(f"interpreter {interpreter!r} is not an executable file")
        return path
    if shutil.which(interpreter, path=path_env) is None:
        raise ValueError(
            f"interpreter {interpreter!r} is not on PATH; install it or set interpreter"
        )
    return interpreter


# --- Building an AppConfig ---


def _cwd(keys: _Keys, ctx: _Ctx, rep: _Reporter) -> Path | None:
    """The app's folder: absolute against base_dir; defaults to base_dir for user input."""
    if "cwd" not in keys.fields or keys.fields["cwd"][1] is None:
        return None if ctx.canonical else ctx.base_dir
    key, value = keys.fields["cwd"]
    try:
        cwd = Path(_abs_path(value, ctx))
    except ValueError as exc:
        raise rep.error(key, str(exc)) from None
    if not ctx.canonical and not cwd.is_dir():
        raise rep.error(key, f"no such directory: {str(cwd)!r}")
    return cwd


# --- Apps with a git source (SPEC 4): script and cwd live in the release ---


def _git_source(keys: _Keys, ctx: _Ctx, rep: _Reporter) -> dict[str, Any] | None:
    """The `git:` mapping, validated by corral.deploy.source (imported here only: most
    commands never read a git source, and the CLI's start-up time matters)."""
    if "git" not in keys.fields or keys.fields["git"][1] is None:
        return None
    key, value = keys.fields["git"]
    if not isinstance(value, Mapping):
        expected = "a mapping of repo, branch, keep, install, steps, timeout"
        raise rep.error(key, _expected(expected, value).args[0])
    from corral.deploy.source import SourceError, source_from_mapping

    try:
        return source_from_mapping(value).to_dict()
    except SourceError as exc:  # exc.key: "branch", "steps[0]"; the message without it
        where = f"{key}.{exc.key}" if exc.key else key
        raise rep.error(where, exc.message) from None


def _check_deploy_name(name: str, keys: _Keys, rep: _Reporter) -> None:
    """The name is a folder under <home>/deploys: no ':' and no leading '.', '_' or '-'."""
    from corral.deploy.layout import DeployLayout

    try:
        DeployLayout(Path("/"), name)
    except ValueError:
        key = keys.fields["name"][0] if "name" in keys.fields else "name"
        raise rep.error(
            key,
            f"{name!r} cannot have deploys (git): use letters, digits and . _ -, starting "
            "with a letter or digit",
        ) from None


def _release_path(value: str) -> str:
    """A relative path inside the release, normalized; '' for the release itself."""
    if "\0" in value:
        raise ValueError("expected a path, got one with a NUL character")
    path = os.path.normpath(value)
    if os.path.isabs(path):
        raise ValueError(
            f"expected a path relative to the release (the app has a git source), got {value!r}"
        )
    if path == ".." or path.startswith("../"):
        raise ValueError(f"{value!r} leads out of the release")
    return "" if path == "." else path


def _release_cwd(keys: _Keys, rep: _Reporter) -> str | None:
    if "cwd" not in keys.fields or keys.fields["cwd"][1] is None:
        return None
    key, value = keys.fields["cwd"]
    if not isinstance(value, str) or not value:
        raise rep.error(key, _expected("a path", value).args[0])
    try:
        return _release_path(value) or None
    except ValueError as exc:
        raise rep.error(key, str(exc)) from None


def _release_script(values: dict[str, Any], keys: _Keys, ctx: _Ctx, rep: _Reporter) -> None:
    """Kept as written, relative to the release: looked up at each launch (the release
    does not exist yet when the config is read). A command line is split; one needing a
    shell runs under `sh -c`."""
    key, script = keys.fields["script"]
    path_env = values.get("env", {}).get("PATH")
    try:
        words = [script]
        if any(c.isspace() for c in script):
            if _needs_shell(script):
                if values.get("interpreter") not in (None, "none"):
                    raise ValueError("a shell command (pipes, $VARS...) cannot have an interpreter")
                values["script"] = shutil.which("sh", path=path_env) or "/bin/sh"
                values["args"] = ["-c", script, *values.get("args", [])]
                values["interpreter"] = "none"
                return
            words = _words(script, ctx)
        program = words[0] if words else ""
        if not program:
            raise _expected("a file, program or command", script)
        if not os.path.isabs(program):
            program = _release_path(program)
            if not program:
                raise ValueError(f"{words[0]!r} is the release's folder, expected a file")
    except ValueError as exc:
        raise rep.error(key, str(exc)) from None
    values["script"] = program
    values["args"] = [*words[1:], *values.get("args", [])]
    interpreter = values.get("interpreter")
    if interpreter is None or interpreter == "none":
        return
    try:
        if "/" in interpreter and not os.path.isabs(interpreter):
            values["interpreter"] = _release_path(interpreter)  # e.g. .venv/bin/python
        else:
            values["interpreter"] = _check_interpreter(interpreter, ctx.base_dir, path_env)
    except ValueError as exc:
        raise rep.error(keys.fields["interpreter"][0], str(exc)) from None


def _convert_fields(keys: _Keys, ctx: _Ctx, rep: _Reporter) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (key, value) in keys.fields.items():
        if name in SPECIAL_KEYS:
            continue
        try:
            values[name] = TABLE[name](value, ctx)
        except ValueError as exc:
            raise rep.error(key, str(exc)) from None
    return values


def _add_profiles(values: dict[str, Any], keys: _Keys, ctx: _Ctx, rep: _Reporter) -> None:
    """env_<name> keys join env_profiles; the same profile set twice is an error."""
    profiles: dict[str, dict[str, str]] = values.setdefault("env_profiles", {})
    for profile, (key, value) in keys.profiles.items():
        if profile in profiles:
            raise rep.error(key, f"profile {profile!r} is also set in env_profiles; keep one")
        try:
            profiles[profile] = _env(value, ctx)
        except ValueError as exc:
            raise rep.error(key, str(exc)) from None


def _apply_time(values: dict[str, Any], keys: _Keys, rep: _Reporter) -> None:
    if "time" not in keys.virtual:
        return
    key, value = keys.virtual["time"]
    if not isinstance(value, bool):
        raise rep.error(key, _expected("true or false", value).args[0])
    if value and values.get("log_date_format") is None:
        values["log_date_format"] = DEFAULT_TIME_FORMAT


def _set_script(values: dict[str, Any], keys: _Keys, ctx: _Ctx, rep: _Reporter) -> None:
    """Look the script up (user input) or take it as is (canonical data)."""
    if "script" not in keys.fields:
        raise rep.error("script", "missing: every app needs a script")
    key, script = keys.fields["script"]
    if not isinstance(script, str) or not script.strip():
        raise rep.error(key, _expected("a file, program or command", script).args[0])
    if ctx.canonical:
        values["script"] = script
        return
    if ctx.release:
        _release_script(values, keys, ctx, rep)
        return
    cwd = ctx.cwd or ctx.base_dir
    path_env = values.get("env", {}).get("PATH")
    interpreter = values.get("interpreter")
    if interpreter is not None:
        try:
            interpreter = _check_interpreter(interpreter, cwd, path_env)
        except ValueError as exc:
            raise rep.error(keys.fields["interpreter"][0], str(exc)) from None
    try:
        program, extra, interpreter = _resolve_script(script, cwd, interpreter, path_env)
        interpreter = _check_interpreter(interpreter, cwd, path_env)
    except ValueError as exc:
        raise rep.error(key, str(exc)) from None
    values["script"] = program
    values["args"] = [*extra, *values.get("args", [])]
    values["interpreter"] = interpreter


def _build(
    raw: Mapping[str, Any], *, source: str, base_dir: Path, index: int | None, canonical: bool
) -> AppConfig:
    rep = _Reporter(source, index)
    if not isinstance(raw, Mapping):
        raise rep.error(None, _expected("a mapping of app settings", raw).args[0])
    guess = peek_name(raw)
    if guess is not None and NAME_RE.match(guess):
        rep.app = guess  # so that even the first errors name the app
    keys = _sort_keys(raw, canonical, rep)
    values: dict[str, Any] = {"name": _name(keys, rep)}
    rep.app = values["name"]
    ctx = _Ctx(canonical=canonical, base_dir=Path(os.path.normpath(base_dir.absolute())))
    values["git"] = _git_source(keys, ctx, rep)
    ctx.release = values["git"] is not None
    if ctx.release:
        _check_deploy_name(values["name"], keys, rep)
        values["cwd"] = _release_cwd(keys, rep)
    else:
        ctx.cwd = _cwd(keys, ctx, rep)
        values["cwd"] = None if ctx.cwd is None else str(ctx.cwd)
    values |= _convert_fields(keys, ctx, rep)
    _add_profiles(values, keys, ctx, rep)
    _apply_time(values, keys, rep)
    _set_script(values, keys, ctx, rep)
    return AppConfig(**values)


def app_from_mapping(
    raw: Mapping[str, Any], *, source: str, base_dir: Path, index: int | None = None
) -> AppConfig:
    """Validate what a user wrote (a config file's app, or CLI flags) into an AppConfig.

    `base_dir` is the config file's folder, or the CLI's cwd; `index` the app's position
    in the file's `apps` list, to name it in errors before its name is known.
    """
    return _build(raw, source=source, base_dir=base_dir, index=index, canonical=False)


def app_from_dict(d: Mapping[str, Any], source: str = "control request") -> AppConfig:
    """Validate the output of `AppConfig.to_dict()` (canonical keys and units) again."""
    return _build(d, source=source, base_dir=Path("/"), index=None, canonical=True)
