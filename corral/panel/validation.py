"""Validation of the panel's form and API fields, with messages shown next to each field.

Single values: each validator returns the cleaned value or raises `FieldError(field,
message)`. Whole app forms and config texts: every field is checked and every mistake
collected into one `FieldErrors`, then the result goes through the same validation the
daemon uses (`corral.config.schema.app_from_mapping`), so what the panel accepts is
exactly what corral accepts. Every path must resolve inside the tenant's home (SPEC 2.2).
In isolated mode both the paths and that validation are the tenant's daemon's
(`resolving_with`): the panel's uid cannot see inside a tenant's private folders.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml

from corral.config import loader
from corral.config.errors import ConfigError, UnknownKeyError, short_repr
from corral.config.model import NAME_RE, AppConfig
from corral.config.procfile import procfile_apps
from corral.config.schema import DISCARD, app_from_dict, app_from_mapping, peek_name
from corral.config.units import parse_duration, parse_signal, parse_size
from corral.core.cron import validate as validate_cron
from corral.core.listen import parse_listen
from corral.panel.confine import PathOutsideHome, confine

Kind = Literal["file", "dir", "any"]
T = TypeVar("T")

NON_FIELD = "_form"
"""The key of an error that belongs to no single field."""
CONFIG_FIELD = "config"
"""The key of an error in a config text that belongs to no app."""

MAX_INSTANCES = 256
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_VARS = 1000
MAX_APP_LIMIT = 1_000_000
MAX_DURATION = 365 * 86400.0
MAX_CONFIG_CHARS = 1024 * 1024
MAX_TEXT = 4096
"""Any other single-line field."""
MIN_RETENTION = 3600.0
MAX_RETENTION = 365 * 86400.0

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USERNAME_RE = re.compile(r"[a-z][a-z0-9_.-]{2,63}")
_TENANT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_BARE_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_LIST_SPLIT_RE = re.compile(r"[\s,]+")
_TRUE = frozenset({"on", "true", "yes", "1"})
_FALSE = frozenset({"off", "false", "no", "0", ""})
_NAME_HINT = "use letters, digits and . _ : - (1 to 80 characters)"
# Settings that would run an app as someone else: never from a tenant (SPEC 2.2).
_REFUSED_KEYS = frozenset({"user", "group", "uid", "gid"})
# Keys (with their PM2 aliases) whose values corral reads as paths, expanding `~`.
_PATH_KEYS = frozenset(
    {"script", "cmd", "command", "cwd", "interpreter", "exec_interpreter", "watch"}
    | {"out_file", "error_file", "err_file", "err_log", "out_log", "output", "log_file"}
)


class Confiner(Protocol):
    """Checks one path of a tenant, as `corral.confine.confine`: the resolved path inside
    `home`, or PathOutsideHome."""

    def __call__(
        self,
        home: Path,
        user_path: str,
        *,
        base: Path | None = None,
        must_exist: bool = False,
        kind: Kind = "any",
    ) -> Path: ...


class Build(Protocol):
    """Validates one app's raw settings into an AppConfig, as `app_from_mapping` does
    (default: in this process; in isolated mode `resolving_with` asks the tenant's
    daemon, which looks the files up with the tenant's rights)."""

    def __call__(
        self, raw: Mapping[str, Any], *, source: str, base_dir: Path, index: int | None = None
    ) -> AppConfig: ...


class FieldError(ValueError):
    """One field's mistake: `message` is shown next to `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FieldErrors(Exception):
    """Every mistake of a form: field name -> message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


# --- Single values ---


def _text(value: object, field: str, *, max_length: int = MAX_TEXT) -> str:
    """A stripped, non-empty string of one line at most `max_length` long."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, "required")
    text = value.strip()
    if len(text) > max_length:
        raise FieldError(field, f"at most {max_length} characters")
    if any(c in text for c in "\x00\r\n"):
        raise FieldError(field, "must be one line of text")
    return text


def _integer(value: object, field: str, low: int, high: int, hint: str = "") -> int:
    what = f"a whole number from {low} to {high}{hint}"
    if isinstance(value, bool):
        raise FieldError(field, f"expected {what}")
    if isinstance(value, int):
        number = value
    else:
        text = _text(value, field, max_length=20)
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise FieldError(field, f"expected {what}, got {short_repr(text)}")
        number = int(text)
    if not low <= number <= high:
        raise FieldError(field, f"expected {what}, got {number}")
    return number


def app_name(value: object, field: str = "name") -> str:
    """An app name as corral accepts it, minus names a target would misread."""
    name = _text(value, field)
    if not NAME_RE.fullmatch(name):
        raise FieldError(field, f"{_NAME_HINT}; got {short_repr(name)}")
    # The panel names apps as daemon targets: "all" means every app, digits an app id.
    if name == "all":
        raise FieldError(field, "'all' is reserved: it means every app")
    if name.isdigit():
        raise FieldError(field, "a name of digits only would be read as an app id")
    if name in (".", ".."):
        raise FieldError(field, f"{name!r} is not a usable name")
    return name


def env_name(value: object, field: str = "env") -> str:
    name = _text(value, field, max_length=MAX_ENV_NAME)
    if not _ENV_NAME_RE.fullmatch(name):
        raise FieldError(
            field,
            f"variable name {short_repr(name)}: use letters, digits and _,"
            " not starting with a digit",
        )
    return name


def env_value(value: object, field: str = "env") -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(field, f"expected text, got {short_repr(value)}")
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        raise FieldError(field, "a value cannot contain a NUL character")
    if len(text) > MAX_ENV_VALUE:
        raise FieldError(field, f"a value is at most {MAX_ENV_VALUE} characters")
    return text


def instances(value: object, field: str = "instances") -> int | str:
    """1..MAX_INSTANCES, or corral's "max" / 0 (one per CPU) / -1 (CPUs but one)."""
    if isinstance(value, str) and value.strip().lower() == "max":
        return "max"
    hint = " ('max' or 0: one per CPU; -1: one per CPU but one)"
    return _integer(value, field, -1, MAX_INSTANCES, hint)


def duration(value: object, field: str = "duration") -> float:
    """Seconds, from a duration with its unit ("500ms", "5s", "2m", "1h30m") or 0.

    A bare number means milliseconds in corral's config files (PM2's habit) and seconds to
    many people; in a form it is refused rather than guessed.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    text = _text(value, field, max_length=64)
    if _BARE_NUMBER_RE.fullmatch(text):
        if float(text) == 0:
            return 0.0
        raise FieldError(field, f"add a unit: {text}ms, {text}s or {text}m?")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise FieldError(field, "at most 365 days")
    return seconds


def size(value: object, field: str = "size") -> int:
    """Bytes, from "512K", "200M", "1G" (binary units) or a number of bytes."""
    if isinstance(value, str):
        value = _text(value, field, max_length=64)
    try:
        return parse_size(value)
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None


def username(value: object, field: str = "username") -> str:
    """A login name, in lower case: 3 to 64 of a-z 0-9 _ . -, starting with a letter."""
    name = _text(value, field, max_length=64).lower()
    if not _USERNAME_RE.fullmatch(name):
        raise FieldError(field, "use 3 to 64 letters, digits and _ . -, starting with a letter")
    return name


def tenant_name(value: object, field: str = "name") -> str:
    """A tenant: a system user name (lower case, at most 31 characters)."""
    name = _text(value, field, max_length=64)
    if not _TENANT_RE.fullmatch(name):
        raise FieldError(
            field,
            "use up to 31 lower-case letters, digits, _ and -, starting with a letter or _",
        )
    return name


def app_limit(value: object, field: str = "app_limit") -> int:
    """How many apps a tenant may have: -1 unlimited, 0 none."""
    return _integer(value, field, -1, MAX_APP_LIMIT, " (-1: unlimited, 0: none)")


def retention(value: object, field: str = "retention") -> float:
    """How long metrics are kept, in seconds: 1 hour to 365 days."""
    seconds = duration(value, field)
    if not MIN_RETENTION <= seconds <= MAX_RETENTION:
        raise FieldError(field, "keep metrics from 1h to 365d")
    return seconds


def boolean(value: object, field: str) -> bool:
    """A checkbox or switch: on/true/yes/1 or off/false/no/0/empty."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FieldError(field, f"expected on or off, got {short_repr(value)}")


# --- The app form ---


def _lines(value: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines that are not # comments."""
    return [
        (number, line)
        for number, line in enumerate(value.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _env_lines(value: object, field: str) -> dict[str, str]:
    """Variables from KEY=VALUE lines (blank lines and # comments skipped), or a mapping
    (JSON)."""
    if isinstance(value, Mapping):
        if len(value) > MAX_ENV_VARS:
            raise FieldError(field, f"at most {MAX_ENV_VARS} variables")
        return {env_name(k, field): env_value(v, field) for k, v in value.items()}
    if not isinstance(value, str):
        raise FieldError(field, "expected KEY=VALUE lines")
    env: dict[str, str] = {}
    lines = _lines(value)
    if len(lines) > MAX_ENV_VARS:
        raise FieldError(field, f"at most {MAX_ENV_VARS} variables")
    for number, line in lines:
        key, sep, item = line.partition("=")
        if not sep:
            raise FieldError(field, f"line {number}: expected KEY=VALUE, got {short_repr(line)}")
        try:
            name = env_name(key, field)
            if name in env:
                raise FieldError(field, f"{name} is set twice")
            env[name] = env_value(item, field)
        except FieldError as exc:
            raise FieldError(field, f"line {number}: {exc.message}") from None
    return env


def _items(value: object, field: str, split: re.Pattern[str]) -> list[str]:
    """A list (JSON) of strings, or text split by `split`, without empty items."""
    if isinstance(value, list):
        if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
            raise FieldError(field, f"expected a list of strings, got {short_repr(value)}")
        return [str(item).strip() for item in value if str(item).strip()]
    if not isinstance(value, str):
        raise FieldError(field, f"expected text, got {short_repr(value)}")
    return [item.strip() for item in split.split(value) if item.strip()]


_LINES_RE = re.compile(r"[\r\n]+")


def _words(value: object, field: str) -> list[str]:
    """Arguments: a list (JSON), or one line split as a shell would."""
    if isinstance(value, list):
        if not all(isinstance(item, str) and "\x00" not in item for item in value):
            raise FieldError(field, f"expected a list of strings, got {short_repr(value)}")
        return list(value)
    text = _text(value, field)
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise FieldError(field, f"unbalanced quotes ({exc})") from None


def _choice(*choices: str) -> Callable[[object, str], str]:
    def convert(value: object, field: str) -> str:
        text = _text(value, field)
        if text not in choices:
            raise FieldError(field, f"expected {' or '.join(choices)}, got {short_repr(text)}")
        return text

    return convert


def _cron(value: object, field: str) -> str:
    text = _text(value, field, max_length=200)
    problem = validate_cron(text)
    if problem is not None:
        raise FieldError(field, problem)
    return text


def _signal(value: object, field: str) -> str:
    try:
        return parse_signal(_text(value, field, max_length=20))
    except ValueError as exc:
        raise FieldError(field, str(exc)) from None


def _interpreter(value: object, field: str) -> str:
    text = _text(value, field)
    if text.startswith("~"):
        raise FieldError(field, "'~' is not expanded here; write the full path")
    return text


def _exit_codes(value: object, field: str) -> list[int]:
    return [_integer(w, field, 0, 255) for w in _items(value, field, _LIST_SPLIT_RE)]


def _patterns(value: object, field: str) -> list[str]:
    return [line for line in _items(value, field, _LINES_RE) if not line.startswith("#")]


FORM_FIELDS: frozenset[str] = frozenset(
    {
        "name",
        "script",
        "args",
        "cwd",
        "interpreter",
        "interpreter_args",
        "instances",
        "exec_mode",
        "env",
        "max_memory_restart",
        "cron_restart",
        "autorestart",
        "merge_logs",
        "wait_ready",
        "watch",
        "ignore_watch",
        "listen",
        "kill_timeout",
        "restart_delay",
        "min_uptime",
        "listen_timeout",
        "exp_backoff_restart_delay",
        "max_restarts",
        "kill_signal",
        "port",
        "stop_exit_codes",
        "out_file",
        "error_file",
        "health_check",
        "log_date_format",
    }
)
"""The fields `validate_app_form` reads; others (csrf_token...) are ignored."""


class _AppForm:
    """The fields of one app form, checked in an order where cwd comes before the paths
    that are relative to it."""

    def __init__(self, form: Mapping[str, str], home: Path, confiner: Confiner) -> None:
        self.form = form
        self.home = home
        self.confine = confiner
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.cwd: Path | None = home

    def given(self, field: str) -> object | None:
        value = self.form.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    def check(self, field: str, convert: Callable[[object, str], Any]) -> None:
        value = self.given(field)
        if value is None:
            return
        try:
            self.values[field] = convert(value, field)
        except FieldError as exc:
            self.errors[exc.field] = exc.message
        except PathOutsideHome as exc:
            self.errors[field] = str(exc)

    def keep_text(self, field: str, convert: Callable[[object, str], Any]) -> None:
        """Check with `convert`, but hand corral the text as written (durations)."""
        self.check(field, convert)
        if field in self.values:
            self.values[field] = _text(self.form[field], field)

    def path(
        self,
        value: object,
        field: str,
        kind: Literal["file", "dir", "any"],
        *,
        base: Path | None = None,
        must_exist: bool = False,
    ) -> str:
        """A path inside the home, relative to `base` (default: the app's cwd)."""
        text = _text(value, field)
        where = base or self.cwd
        return str(self.confine(self.home, text, base=where, kind=kind, must_exist=must_exist))

    def run(self) -> dict[str, Any]:
        self.check("name", app_name)
        self.check_cwd()
        self.check_script()
        for field in ("args", "interpreter_args"):
            self.check(field, _words)
        self.check("interpreter", _interpreter)
        self.check("instances", instances)
        self.check("exec_mode", _choice("fork", "cluster"))
        self.check("env", _env_lines)
        for field in ("max_memory_restart",):
            self.check(field, size)
        self.check("cron_restart", _cron)
        for field in ("autorestart", "merge_logs", "wait_ready"):
            self.check(field, boolean)
        self.check("watch", self.watch)
        self.check("ignore_watch", _patterns)
        self.check("listen", self.listen)
        durations = (
            "kill_timeout",
            "restart_delay",
            "min_uptime",
            "listen_timeout",
            "exp_backoff_restart_delay",
        )
        for field in durations:
            self.keep_text(field, duration)
        self.check("max_restarts", lambda v, f: _integer(v, f, 0, 1_000_000))
        self.check("kill_signal", _signal)
        self.check("port", lambda v, f: _integer(v, f, 1, 65535))
        self.check("stop_exit_codes", _exit_codes)
        for field in ("out_file", "error_file"):
            self.check(field, self.log_path)
        for field in ("health_check", "log_date_format"):
            self.check(field, _text)
        return self.values

    def check_cwd(self) -> None:
        if self.given("cwd") is None:
            return
        self.check("cwd", lambda v, f: self.path(v, f, "dir", base=self.home, must_exist=True))
        self.cwd = Path(self.values["cwd"]) if "cwd" in self.values else None

    def check_script(self) -> None:
        value = self.given("script")
        if value is None:
            self.errors["script"] = "required: the file to run, inside your home"
            return
        if self.cwd is None and not str(value).strip().startswith("/"):
            return  # relative to a cwd that is wrong: its own error says so

        def script(value: object, field: str) -> str:
            text = _text(value, field)
            try:
                return self.path(text, field, "file", must_exist=True)
            except PathOutsideHome as exc:
                if " " in text and "does not exist" in str(exc):
                    raise FieldError(
                        field, f"{exc}; put the program's arguments in the args field"
                    ) from None
                raise

        self.check("script", script)

    def watch(self, value: object, field: str) -> bool | list[str]:
        """on/off (off, or the cwd), or paths one per line."""
        if isinstance(value, bool) or str(value).strip().lower() in _TRUE | _FALSE:
            return boolean(value, field)
        return [self.path(line, field, "any") for line in _patterns(value, field)]

    def listen(self, value: object, field: str) -> list[str]:
        """Addresses separated by spaces, commas or lines; unix sockets in the home."""
        addresses = _items(value, field, _LIST_SPLIT_RE)
        for address in addresses:
            try:
                parsed = parse_listen(address)
            except ValueError as exc:
                raise FieldError(field, str(exc)) from None
            if parsed.path is not None:
                self.confine(self.home, parsed.path)
        return addresses

    def log_path(self, value: object, field: str) -> str:
        text = _text(value, field)
        if text in (DISCARD, "NULL"):
            return DISCARD
        return self.path(text, field, "file")


def validate_app_form(
    form: Mapping[str, str],
    tenant_home: Path,
    confiner: Confiner = confine,
    build: Build = app_from_mapping,
) -> dict[str, Any]:
    """The app a creation or edit form describes, as the daemon's `start` takes it
    (`AppConfig.to_dict()`); FieldErrors with every field's mistake otherwise.

    An empty field means corral's default. Checkboxes are on/off (an unchecked box sends
    nothing: pair it with a hidden "off" field before it). script and cwd (and log files,
    watched paths, unix sockets) must resolve inside `tenant_home`; a relative script is
    taken from cwd, cwd from the home. `confiner` checks each path and `build` validates
    the whole (default: in this process; `resolving_with` asks the tenant's daemon).
    """
    checker = _AppForm(form, tenant_home, confiner)
    values = checker.run()
    if checker.errors:
        raise FieldErrors(checker.errors)
    try:
        app = build(values, source="form", base_dir=tenant_home)
        _confine_app(app, tenant_home, confiner)
    except ConfigError as exc:
        field = exc.key if exc.key in FORM_FIELDS else NON_FIELD
        raise FieldErrors({field: exc.message}) from None
    except FieldError as exc:
        raise FieldErrors({exc.field: exc.message}) from None
    return app.to_dict()


def _confine_app(app: AppConfig, home: Path, confine: Confiner) -> None:
    """Refuse an app whose paths, as corral resolved them, lead outside `home`; replace
    them by their resolved form. Raises FieldError naming the key."""

    def inside(key: str, path: str, kind: Literal["file", "dir", "any"] = "any") -> str:
        try:
            return str(confine(home, path, must_exist=kind != "any", kind=kind))
        except PathOutsideHome as exc:
            raise FieldError(key, str(exc)) from None

    app.name = app_name(app.name)
    if app.cwd is not None:
        app.cwd = inside("cwd", app.cwd, "dir")
    try:
        app.script = str(confine(home, app.script, must_exist=True, kind="file"))
    except PathOutsideHome:
        raise FieldError(
            "script",
            f"runs {app.script}, which is not a file inside your home: set script to a file"
            " in your home, interpreter to the program that runs it and args to its arguments",
        ) from None
    for key in ("out_file", "error_file"):
        path = getattr(app, key)
        if path is not None and path != DISCARD:
            setattr(app, key, inside(key, path))
    app.watch = [inside("watch", path) for path in app.watch]
    for address in app.listen:
        if address.strip().startswith("unix:"):
            inside("listen", address.strip()[len("unix:") :])


# --- Config texts (the config editor and uploads) ---

TextFormat = Literal["yaml", "json", "toml", "procfile"]
TEXT_FORMATS: tuple[TextFormat, ...] = ("yaml", "json", "toml", "procfile")


def _yaml_lines(text: str) -> dict[tuple[int, str | None], int]:
    """Line numbers of each app (index, None) and of its keys (index, key), for YAML."""
    lines: dict[tuple[int, str | None], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    apps = root
    if isinstance(root, yaml.MappingNode):
        apps = next((v for k, v in root.value if k.value == "apps"), None)
    if not isinstance(apps, yaml.SequenceNode):
        return lines
    for index, item in enumerate(apps.value):
        lines[(index, None)] = item.start_mark.line + 1
        if isinstance(item, yaml.MappingNode):
            for key, _ in item.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(index, str(key.value))] = key.start_mark.line + 1
    return lines


def _procfile_lines(text: str) -> dict[tuple[int, str | None], int]:
    """The line of each app of a Procfile (one app per line that is not blank or #)."""
    lines: dict[tuple[int, str | None], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.strip().startswith("#"):
            index = len(lines)
            lines[(index, None)] = lineno
    return lines


def _raw_apps(text: str, fmt: TextFormat) -> list[Any]:
    source = "config"
    try:
        if fmt not in TEXT_FORMATS:
            expected = ", ".join(TEXT_FORMATS)
            raise ConfigError(source, f"unknown format {fmt!r}: expected one of {expected}")
        if fmt == "procfile":
            return list(procfile_apps(text, source=source))
        document = loader._PARSERS[fmt](text, source)
        if document is None or document == {}:
            raise ConfigError(source, "the config is empty: expected an 'apps' list")
        raws = loader._apps_list(document, source)
        loader._check_duplicates([peek_name(raw) for raw in raws], source)
    except ConfigError as exc:
        raise FieldErrors({CONFIG_FIELD: _without_source(exc)}) from None
    return raws


def _without_source(exc: ConfigError) -> str:
    return str(exc).removeprefix(f"{exc.source}: ")


def _tilde_paths(raw: Mapping[Any, Any]) -> None:
    """Refuse `~/...` paths: corral would expand them to the panel's own home."""
    for key in _PATH_KEYS & set(raw):
        value = raw[key]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.strip().startswith("~"):
                raise FieldError(
                    key, f"{item!r}: '~' is not expanded here; write the path from your home"
                )


def _config_app(
    raw: Any, index: int, home: Path, confine: Confiner, build: Build
) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        for key in raw:
            if key in _REFUSED_KEYS:
                raise FieldError(str(key), "running an app as another user is not allowed here")
        _tilde_paths(raw)
        raw = dict(raw)
        cwd = raw.get("cwd")
        if isinstance(cwd, str):
            try:
                raw["cwd"] = str(confine(home, cwd, must_exist=True, kind="dir"))
            except PathOutsideHome as exc:
                raise FieldError("cwd", str(exc)) from None
        base = Path(raw["cwd"]) if isinstance(raw.get("cwd"), str) else home
        for key in ("script", "cmd", "command", "log_file"):
            value = raw.get(key)
            # Checked before corral looks at the file, so that no error message tells
            # whether something outside the home exists. A command line: checked after.
            if not isinstance(value, str) or value in (DISCARD, "NULL") or not value.strip():
                continue
            if not any(c.isspace() for c in value.strip()):
                try:
                    confine(home, value, base=base)
                except PathOutsideHome as exc:
                    raise FieldError(key, str(exc)) from None
    if not isinstance(raw, Mapping):  # said by app_from_mapping, in the panel's words
        app_from_mapping(raw, source="config", base_dir=home, index=index)
    app = build(raw, source="config", base_dir=home, index=index)
    _confine_app(app, home, confine)
    return app.to_dict()


def config_text_to_apps(
    text: str,
    fmt: TextFormat,
    tenant_home: Path,
    confiner: Confiner = confine,
    build: Build = app_from_mapping,
) -> list[dict[str, Any]]:
    """The apps of a config text (YAML, JSON or TOML, as in a corral.yaml, or a Procfile's
    `name: command` lines), validated as `corral start` would, every path confined to
    `tenant_home`; relative paths are taken from the home. Raises FieldErrors: `config`
    for the text as a whole, `apps[i].key` for one app's key, each message with its line
    number when known."""
    if len(text) > MAX_CONFIG_CHARS:
        raise FieldErrors({CONFIG_FIELD: f"at most {MAX_CONFIG_CHARS // 1024} KiB of config"})
    if "\x00" in text:
        raise FieldErrors({CONFIG_FIELD: "the config contains a NUL character"})
    raws = _raw_apps(text, fmt)
    lines = (
        _yaml_lines(text) if fmt == "yaml" else _procfile_lines(text) if fmt == "procfile" else {}
    )
    apps: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for index, raw in enumerate(raws):
        try:
            apps.append(_config_app(raw, index, tenant_home, confiner, build))
        except ConfigError as exc:
            where = f"apps[{index}]" + (f".{exc.key}" if exc.key else "")
            errors[where] = _located(lines, index, exc.key, raw, exc.message)
        except FieldError as exc:
            errors[f"apps[{index}].{exc.field}"] = _located(
                lines, index, exc.field, raw, exc.message
            )
    if errors:
        raise FieldErrors(errors)
    return apps


def _located(
    lines: dict[tuple[int, str | None], int], index: int, key: str | None, raw: Any, message: str
) -> str:
    """The message with the line (YAML) and the app's name, when known."""
    prefix = []
    line = lines.get((index, key)) or lines.get((index, None))
    if line is not None:
        prefix.append(f"line {line}")
    name = peek_name(raw)
    if name is not None:
        prefix.append(f"app {name!r}")
    return ": ".join([*prefix, message])


# --- Paths and apps checked by the tenant's daemon (isolated mode) ---

MAX_RESOLVE_BATCH = 64
"""Entries per `resolve_paths` or `check_apps` request (the daemon's limit)."""
MAX_RESOLVE_ROUNDS = 6
"""Paths, then the apps, then their resolved paths; one more for a wrong guess."""

Resolve = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""Sends `resolve_paths` entries to the tenant's daemon; its answers, in order."""
Check = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]
"""Sends raw app settings and their source to the tenant's daemon (`check_apps`); one
AppConfig dict each, in order, or AppRefused."""
_AppKey = tuple[str, str]
"""(the app's raw settings as JSON, source)"""


class AppRefused(Exception):
    """The tenant's daemon refused an app it was asked to check; `str()` is its message
    ("<source>: app 'web': key 'script': no such file or program: ...")."""


class _Pending(ConfigError):
    """Not a mistake: the tenant's daemon has not judged this app yet (a later pass will)."""


class _Asking:
    """A Confiner answering from the daemon's answers; a path not asked yet is noted and
    answered with a lexical guess, so that one pass finds every path a form needs."""

    def __init__(self, answers: dict[tuple[str, str | None, bool, str], dict[str, Any]]) -> None:
        self.answers = answers
        self.missing: list[tuple[str, str | None, bool, str]] = []

    def __call__(
        self,
        home: Path,
        user_path: str,
        *,
        base: Path | None = None,
        must_exist: bool = False,
        kind: Kind = "any",
    ) -> Path:
        if not isinstance(user_path, str) or not user_path.strip():
            raise PathOutsideHome("a path is required")
        if "\x00" in user_path:
            raise PathOutsideHome(f"{user_path!r} contains a NUL character")
        try:
            size = len(os.fsencode(user_path))
        except UnicodeError:
            raise PathOutsideHome(f"{user_path!r} is not a valid file name") from None
        if size > MAX_TEXT:
            raise PathOutsideHome(f"{short_repr(user_path)} is longer than {MAX_TEXT} bytes")
        key = (user_path, None if base is None else str(base), must_exist, kind)
        answer = self.answers.get(key)
        if answer is None:
            if key not in self.missing:
                self.missing.append(key)
            return Path(os.path.normpath(os.path.join(base or home, user_path)))
        if answer.get("ok") is True and isinstance(answer.get("path"), str):
            return Path(answer["path"])
        raise PathOutsideHome(str(answer.get("error") or f"{user_path!r} cannot be used"))


class _Building:
    """A Build answering from the daemon's `check_apps` answers. An app not asked yet is
    noted (once every path before it is answered: never with guessed paths) and is a
    _Pending error for this pass."""

    def __init__(self, answers: dict[_AppKey, dict[str, Any] | ConfigError], paths: _Asking):
        self.answers = answers
        self.paths = paths
        self.missing: dict[_AppKey, dict[str, Any]] = {}

    def __call__(
        self, raw: Mapping[str, Any], *, source: str, base_dir: Path, index: int | None = None
    ) -> AppConfig:
        label = None if index is None else f"apps[{index}]"
        settings = _wire_settings(raw, source, label)
        key = (json.dumps(settings, sort_keys=True), source)
        answer = self.answers.get(key)
        if answer is None:
            if not self.paths.missing:
                self.missing.setdefault(key, settings)
            raise _Pending(source, "not checked yet", app=label)
        if isinstance(answer, ConfigError):
            raise type(answer)(source, answer.message, app=answer.app or label, key=answer.key)
        return app_from_dict(answer, source="the tenant's daemon")


def _wire_settings(raw: Mapping[Any, Any], source: str, label: str | None) -> dict[str, Any]:
    """A JSON copy of an app's settings, to send; a value JSON cannot carry (a YAML or
    TOML date) is a ConfigError naming its key, as corral would refuse it anyway."""
    for key, value in raw.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            message = f"expected text, a number, a list or a mapping, got {short_repr(value)}"
            raise ConfigError(source, message, app=label, key=str(key)) from None
    try:
        settings: dict[str, Any] = json.loads(json.dumps(raw))
    except (TypeError, ValueError):
        raise ConfigError(source, "the app's keys must be text", app=label) from None
    return settings


_APP_LABEL_RE = re.compile(r"(apps\[\d+\]|app '[^']*'): ")
_KEY_RE = re.compile(r"(unknown )?key ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")(: )?", re.S)


def daemon_config_error(message: str, source: str) -> ConfigError:
    """The ConfigError a daemon's `check_apps` refusal stands for: its message is
    `str(ConfigError)` ("<source>: <app>: key '<key>': <what>"), and the key is what the
    panel files the mistake under."""
    rest = message.removeprefix(f"{source}: ")
    app = None
    label = _APP_LABEL_RE.match(rest)
    if label is not None:
        # "apps[i]" counts the daemon's batch, not the panel's config: the panel's own
        # label is used instead.
        app = None if label[1].startswith("apps[") else label[1][len("app '") : -1]
        rest = rest[label.end() :]
    found = _KEY_RE.match(rest)
    if found is not None:
        try:
            key = ast.literal_eval(found[2])
        except (ValueError, SyntaxError):
            key = None
        if isinstance(key, str) and found[1] and not found[3]:
            return UnknownKeyError(source, rest, app=app, key=key)
        if isinstance(key, str) and not found[1] and found[3]:
            return ConfigError(source, rest[found.end() :], app=app, key=key)
    return ConfigError(source, rest, app=app)


def _ask_apps(
    check: Check,
    missing: Mapping[_AppKey, dict[str, Any]],
    answers: dict[_AppKey, dict[str, Any] | ConfigError],
) -> None:
    """One `check_apps` request per source and 64 apps; a refused batch is asked again
    app by app, so that every app's mistake is found, as in development mode."""
    by_source: dict[str, list[_AppKey]] = {}
    for key in missing:
        by_source.setdefault(key[1], []).append(key)
    for source, keys in by_source.items():
        for start in range(0, len(keys), MAX_RESOLVE_BATCH):
            chunk = keys[start : start + MAX_RESOLVE_BATCH]
            try:
                checked = check([missing[key] for key in chunk], source)
            except AppRefused as exc:
                if len(chunk) == 1:
                    answers[chunk[0]] = daemon_config_error(str(exc), source)
                else:
                    for key in chunk:
                        _ask_apps(check, {key: missing[key]}, answers)
                continue
            answers.update(zip(chunk, checked, strict=True))


def resolving_with(resolve: Resolve, check: Check, run: Callable[[Confiner, Build], T]) -> T:
    """`run(confiner, build)` with every path checked and every app validated by the
    tenant's daemon (isolated mode: the panel's uid cannot see a tenant's private folders,
    and must not judge with its own rights). A pass notes the paths asked (answered with
    lexical guesses) and the apps whose paths are all answered; one `resolve_paths` and one
    `check_apps` request answer them, and the pass that needs no new answer is the result:
    paths of the form, then the apps, then the paths the daemon resolved them to (which
    must be inside the home). A guess that proved wrong (a symlinked cwd) costs one more
    round."""
    answers: dict[tuple[str, str | None, bool, str], dict[str, Any]] = {}
    built: dict[_AppKey, dict[str, Any] | ConfigError] = {}
    for _ in range(MAX_RESOLVE_ROUNDS):
        confiner = _Asking(answers)
        builder = _Building(built, confiner)
        try:
            result = run(confiner, builder)
        except (FieldErrors, FieldError, ConfigError, PathOutsideHome):
            if not (confiner.missing or builder.missing):
                raise
        else:
            if not (confiner.missing or builder.missing):
                return result
        keys = confiner.missing
        for start in range(0, len(keys), MAX_RESOLVE_BATCH):
            chunk = keys[start : start + MAX_RESOLVE_BATCH]
            entries = [{"path": p, "base": b, "must_exist": m, "kind": k} for p, b, m, k in chunk]
            answers.update(zip(chunk, resolve(entries), strict=True))
        _ask_apps(check, builder.missing, built)
    raise FieldErrors({NON_FIELD: "the paths could not be checked; try again"})
