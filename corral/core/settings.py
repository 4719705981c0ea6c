"""Daemon-wide settings (`corral set KEY VALUE`, `corral get [KEY]`), kept in settings.json.

Each key has a parser that turns what a person types into a typed value, and a default.
Apps may override the log settings with their own keys (`log_max_size`, `log_retain`,
`log_compress`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config.errors import did_you_mean
from corral.config.units import SIZE_HINT, parse_size
from corral.core.atomic import write_json_atomic


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _count(value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"expected a whole number >= 0, got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return number


def _size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(f"expected {SIZE_HINT}, got {value!r}") from None


@dataclass(frozen=True)
class Setting:
    parse: Callable[[Any], Any]
    default: Any
    help: str


def _port(value: Any) -> int:
    number = _count(value)
    if number > 65535:
        raise ValueError(f"expected a port from 1 to 65535, or 0 for off, got {value!r}")
    return number


_LOOPBACK = ("127.", "::1", "localhost")


def _loopback(value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(_LOOPBACK):
        raise ValueError(f"the metrics endpoint is served on loopback only, got {value!r}")
    return text


def _verifier(value: Any) -> str | None:
    """The agent password's verifier (corral.protocol.hub.proof.PasswordVerifier as text),
    made by `corral set agent.password` from the typed password: never the password."""
    if value is None or value == "":
        return None
    from corral.protocol.hub.errors import HubProtocolError
    from corral.protocol.hub.proof import PasswordVerifier

    try:
        return PasswordVerifier.from_text(str(value)).to_text()
    except HubProtocolError:
        # Never echo the value: someone may have typed the password itself here.
        raise ValueError(
            "expected the verifier that `corral set agent.password` makes from the password"
            " it asks for (the password itself is never stored)"
        ) from None


def _interval(value: Any) -> int:
    try:
        number = _count(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 3600:
        raise ValueError(f"expected seconds from 1 to 3600, got {value!r}")
    return number


def _queue(value: Any) -> int:
    try:
        number = _count(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 100_000:
        raise ValueError(f"expected a number of pushes from 1 to 100000, got {value!r}")
    return number


KNOWN: dict[str, Setting] = {
    "logs.max_size": Setting(
        _size, 10 * 1024 * 1024, "rotate a log file past this size (0: never)"
    ),
    "logs.retain": Setting(_count, 10, "rotated files kept per log file"),
    "logs.compress": Setting(_bool, False, "gzip rotated log files"),
    "metrics.port": Setting(_port, 0, "serve Prometheus metrics on this port (0: off)"),
    "metrics.host": Setting(_loopback, "127.0.0.1", "the loopback address for metrics"),
    "agent.password": Setting(
        _verifier, None, "the agent password's verifier: sensitive remote actions need it"
    ),
    "agent.remote_actions": Setting(_bool, True, "run the hub's remote actions at all"),
    "agent.interval": Setting(_interval, 5, "seconds between two pushes to the hub"),
    "agent.queue": Setting(
        _queue, 720, "pushes kept while the hub is away (the oldest are dropped past it)"
    ),
}


class Settings:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {key: s.default for key, s in KNOWN.items()}

    def load(self) -> list[str]:
        """Read the file (blocking); returns problems found, which are skipped."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            return [f"{self.path}: {exc}; using defaults"]
        problems = []
        if not isinstance(raw, dict):
            return [f"{self.path}: not a JSON object; using defaults"]
        for key, value in raw.items():
            try:
                self.values[check_key(key)] = KNOWN[key].parse(value)
            except ValueError as exc:
                problems.append(f"{self.path}: {key}: {exc}")
        return problems

    def save(self) -> None:
        write_json_atomic(self.path, self.values)

    def parse(self, key: str, value: Any) -> Any:
        """Validate without changing anything (raises ValueError with a clear message)."""
        return KNOWN[check_key(key)].parse(value)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def check_key(key: str) -> str:
    if key not in KNOWN:
        hint = did_you_mean(key, KNOWN)
        known = ", ".join(sorted(KNOWN))
        raise ValueError(
            f"unknown setting {key!r}"
            + (f" (did you mean {hint!r}?)" if hint else f"; known: {known}")
        )
    return key
