"""Panel-wide settings an admin changes on the Settings screen, stored in the database.

Each setting has a type, a default and a check; unknown keys are refused. Values are
read through `get_setting`, so a fresh database needs no rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session as DbSession

from corral.config.units import parse_duration
from corral.panel.db.models import Setting


class SettingError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class SettingSpec:
    key: str
    label: str
    default: Any
    parse: Callable[[str], Any]
    """From the form's text to the stored value; raises ValueError with a message."""
    show: Callable[[Any], str] = str


def _seconds_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = parse_duration(text.strip(), bare_seconds=True)
        if not low <= seconds <= high:
            raise ValueError(f"must be between {_human(low)} and {_human(high)}")
        return seconds

    return parse


def _human(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec(
            "metrics.retention",
            "Keep metrics samples for",
            7 * 86400.0,
            _seconds_between(3600, 365 * 86400),
            _human,
        ),
        SettingSpec(
            "metrics.interval",
            "Sample CPU and memory every",
            10.0,
            _seconds_between(2, 3600),
            _human,
        ),
        SettingSpec(
            "audit.retention",
            "Keep audit entries for",
            365 * 86400.0,
            _seconds_between(86400, 10 * 365 * 86400),
            _human,
        ),
    )
}


def get_setting(db: DbSession, key: str) -> Any:
    spec = SETTINGS[key]
    row = db.get(Setting, key)
    return spec.default if row is None else json.loads(row.value)


def set_setting(db: DbSession, key: str, text: str) -> Any:
    """Check and store one setting from what a user typed; returns the stored value."""
    spec = SETTINGS.get(key)
    if spec is None:
        raise SettingError(key, "no such setting")
    try:
        value = spec.parse(text)
    except ValueError as exc:
        raise SettingError(key, str(exc)) from None
    row = db.get(Setting, key)
    if row is None:
        db.add(Setting(key=key, value=json.dumps(value)))
    else:
        row.value = json.dumps(value)
    return value


def all_settings(db: DbSession) -> dict[str, Any]:
    return {key: get_setting(db, key) for key in SETTINGS}
