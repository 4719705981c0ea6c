"""Procfiles (Heroku, foreman): one `name: command` line per app.

Each line becomes the raw settings of one app, validated like any config file's app
(so the command is looked up by `resolve_script`, relative to the Procfile's folder).
"""

from __future__ import annotations

import re
from typing import Any

from corral.config.errors import ConfigError, short_repr
from corral.config.model import NAME_RE

_LINE_RE = re.compile(r"^([^:\s]+)\s*:\s*(.*)$")

# Heroku runs `release` once per deploy, not as a service: run it once, never restart.
ONE_SHOT_NAMES = frozenset({"release"})


def procfile_apps(text: str, *, source: str) -> list[dict[str, Any]]:
    """The raw app settings ({"name", "script"}) of a Procfile's lines, in order."""
    apps: list[dict[str, Any]] = []
    lines: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, command = _parse_line(stripped, lineno, source)
        if name in lines:
            message = f"line {lineno}: duplicate name (first on line {lines[name]})"
            raise ConfigError(source, message, app=name)
        lines[name] = lineno
        app: dict[str, Any] = {"name": name, "script": command}
        if name in ONE_SHOT_NAMES:
            app["autorestart"] = False
        apps.append(app)
    if not apps:
        raise ConfigError(source, "no processes: expected lines like 'web: gunicorn app:app'")
    return apps


def _parse_line(line: str, lineno: int, source: str) -> tuple[str, str]:
    match = _LINE_RE.match(line)
    if match is None or not match[2].strip():
        message = f"line {lineno}: expected 'name: command', got {short_repr(line)}"
        raise ConfigError(source, message)
    name, command = match[1], match[2].strip()
    if not NAME_RE.match(name):
        message = f"line {lineno}: expected a name of letters, digits and . _ -, got {name!r}"
        raise ConfigError(source, message)
    return name, command
