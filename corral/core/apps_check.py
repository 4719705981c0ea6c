"""`check_apps`: the daemon validates a tenant's app settings with its own (the tenant's) rights.

In isolated mode the panel's uid cannot see inside a tenant's private folders, so the
validation that looks files up (`config.schema.app_from_mapping`: the script, the
interpreter, the cwd) runs here, as the tenant, relative to the tenant home (the parent of
CORRAL_HOME). A script the tenant cannot read, or a cwd it cannot enter, is refused as well:
the app would only fail at its first launch. Confinement to the home stays the panel's job
(`resolve_paths` on what this answers). Blocking: call it in a thread.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from corral.config.errors import ConfigError
from corral.config.model import AppConfig
from corral.config.schema import app_from_mapping
from corral.core.paths_check import BadRequest

MAX_APPS = 64
MAX_SOURCE = 200
DEFAULT_SOURCE = "check_apps"
_SCRIPT_KEYS = ("script", "cmd", "command")


def parse_request(args: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The apps and source of a `check_apps` request, checked; BadRequest otherwise."""
    unknown = set(args) - {"apps", "source"}
    if unknown:
        raise BadRequest(f"unknown argument {sorted(unknown)[0]!r}")
    apps = args.get("apps")
    if not isinstance(apps, list):
        raise BadRequest("'apps' must be a list of app settings (objects)")
    if len(apps) > MAX_APPS:
        raise BadRequest(f"'apps' has {len(apps)} entries; at most {MAX_APPS}")
    for index, raw in enumerate(apps):
        if not isinstance(raw, dict):
            raise BadRequest(f"apps[{index}] must be an object")
    source = args.get("source")
    if source is None:
        return apps, DEFAULT_SOURCE
    if not isinstance(source, str) or not source.strip():
        raise BadRequest("'source' must be a non-empty string or null")
    if len(source) > MAX_SOURCE or not source.isprintable():
        raise BadRequest(f"'source' must be one line of at most {MAX_SOURCE} characters")
    return apps, source


def check_apps(home: Path, apps: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """`AppConfig.to_dict()` of each app, in order, validated as `corral start` would with
    this process's rights, relative paths taken from `home`; the first bad app's
    ConfigError (naming the app and the key) otherwise."""
    checked = []
    for index, raw in enumerate(apps):
        app = app_from_mapping(raw, source=source, base_dir=home, index=index)
        _check_access(app, raw, source)
        checked.append(app.to_dict())
    return checked


def _me() -> str:
    uid = os.getuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r}"
    except KeyError:
        return f"uid {uid}"


def _check_access(app: AppConfig, raw: dict[str, Any], source: str) -> None:
    """What app_from_mapping does not ask: can this uid enter the cwd, read the script?"""
    if app.cwd is not None and not os.access(app.cwd, os.X_OK):
        message = f"{app.cwd!r} cannot be entered by {_me()} (permission denied)"
        raise ConfigError(source, message, app=app.name, key="cwd")
    # An interpreter reads the script; a program run directly needs only X (checked).
    if app.interpreter != "none" and not os.access(app.script, os.R_OK):
        key = next((k for k in _SCRIPT_KEYS if k in raw), "script")
        message = f"{app.script!r} cannot be read by {_me()} (permission denied)"
        raise ConfigError(source, message, app=app.name, key=key)
