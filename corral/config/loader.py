"""Reading config files: corral.yaml / .toml / .json, PM2 ecosystem files, Procfiles.

A file holds a top-level `apps` list (a bare list of apps is accepted for YAML and
JSON). Every app is validated by `corral.config.schema`; every mistake is a ConfigError
naming the file, and for parse errors the line.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from corral.config.errors import ConfigError, UnknownKeyError, short_repr, suggestion
from corral.config.filenames import config_format, is_js_ecosystem
from corral.config.model import AppConfig
from corral.config.procfile import procfile_apps
from corral.config.schema import app_from_mapping, peek_name

# Top-level keys besides `apps`. PM2's `deploy` section is for `pm2 deploy`: ignored.
_TOP_LEVEL_KEYS = frozenset({"apps", "deploy"})


# --- Reading and parsing ---


def _read(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(source, "is a directory, expected a config file") from None
    except PermissionError:
        raise ConfigError(source, "permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror or exc}") from None


_MERGE_TAG = "tag:yaml.org,2002:merge"


# libyaml's loader where PyYAML was built with it: ten times faster on a 100-app file.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictYamlLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""


def _no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicate_keys,
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(source, f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, f"invalid YAML: {exc}") from None


def _parse_toml(text: str, source: str) -> Any:
    import tomllib  # only TOML configs pay for it, at every CLI start

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"invalid TOML: {exc}") from None


class _DuplicateKey(Exception):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different (json keeps the last of a repeated key)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ConfigError(source, message) from None
    except _DuplicateKey as exc:
        raise ConfigError(source, f"invalid JSON: key {exc.args[0]!r} is given twice") from None


_PARSERS = {"yaml": _parse_yaml, "toml": _parse_toml, "json": _parse_json}


def _apps_list(document: Any, source: str) -> list[Any]:
    """The raw apps of a parsed document: {"apps": [...]} or a bare list."""
    if isinstance(document, Mapping):
        for key in document:
            if key not in _TOP_LEVEL_KEYS:
                hint = suggestion(str(key), _TOP_LEVEL_KEYS)
                if not hint and isinstance(key, str) and key in ("script", "name"):
                    hint = " (app settings go in a list under 'apps')"
                raise UnknownKeyError(
                    source, f"unknown top-level key {short_repr(key)}{hint}", key=str(key)
                )
        if "apps" not in document:
            raise ConfigError(source, "expected a top-level 'apps' list")
        apps = document["apps"]
        if not isinstance(apps, list) or not apps:
            what = "a list of at least one app"
            raise ConfigError(source, f"expected {what}, got {short_repr(apps)}", key="apps")
        return apps
    if not isinstance(document, list) or not document:
        message = f"expected an 'apps' list, got {short_repr(document)}"
        raise ConfigError(source, message)
    return document


def _raw_apps(path: Path, source: str) -> list[Any]:
    kind = config_format(path.name)
    if kind is None:
        if is_js_ecosystem(path.name):
            raise ConfigError(
                source,
                "JavaScript config files are not supported (corral does not run code to read"
                " its config); write the same keys as JSON (ecosystem.config.json) or YAML",
            )
        raise ConfigError(
            source, "unknown config file type: expected .yaml, .yml, .toml, .json or a Procfile"
        )
    text = _read(path, source)
    if kind == "procfile":
        return list(procfile_apps(text, source=source))
    document = _PARSERS[kind](text, source)
    if document is None or document == {}:
        raise ConfigError(source, "the file is empty: expected an 'apps' list")
    return _apps_list(document, source)


# --- Selecting and validating ---


def _check_duplicates(names: list[str | None], source: str) -> None:
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if name is None:
            continue
        if name in first:
            message = f"duplicate app name (apps[{first[name]}] and apps[{index}])"
            raise ConfigError(source, message, app=name, key="name")
        first[name] = index


def _split_names(only: Sequence[str]) -> list[str]:
    # `--only api,worker` may arrive as one string: names never contain commas.
    return [n.strip() for item in only for n in item.split(",") if n.strip()]


def _select(names: list[str | None], only: Sequence[str] | None, source: str) -> list[int]:
    """The indexes of the apps to load: all, or those named in `only` (in file order)."""
    if not only:
        return list(range(len(names)))
    wanted = _split_names(only)
    known = [n for n in names if n is not None]
    for name in wanted:
        if name not in known:
            hint = suggestion(name, known)
            message = f"--only: no app named {name!r} in this file{hint}; apps: {', '.join(known)}"
            raise ConfigError(source, message)
    return [i for i, n in enumerate(names) if n in wanted]


def load_file(path: Path, *, only: Sequence[str] | None = None) -> list[AppConfig]:
    """The apps of a config file, validated, in file order; `only` keeps those names.

    Apps left out by `only` are not validated, so one unfinished app does not block
    starting the others.
    """
    source = str(path)
    raws = _raw_apps(path, source)
    names = [peek_name(raw) for raw in raws]
    _check_duplicates(names, source)
    base_dir = path.parent.absolute()
    return [
        app_from_mapping(raws[i], source=source, base_dir=base_dir, index=i)
        for i in _select(names, only, source)
    ]


def check_env_name(apps: Sequence[AppConfig], name: str, *, source: str) -> None:
    """`--env name` must match an `env_<name>` of at least one app (PM2 ignores typos)."""
    if any(name in app.env_profiles for app in apps):
        return
    defined = sorted({p for app in apps for p in app.env_profiles})
    hint = suggestion(name, defined)
    listing = ", ".join(f"env_{p}" for p in defined) or "none"
    message = f"--env {name!r}: no app defines env_{name}{hint}; profiles: {listing}"
    raise ConfigError(source, message)
