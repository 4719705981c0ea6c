"""Parsers for the units a config may use: durations, sizes, signals, umasks.

Each returns the canonical value (seconds, bytes, "SIGINT", an int) and raises
ValueError("expected ..., got ...") on anything else.
"""

from __future__ import annotations

import math
import re
import signal

from corral.config.errors import short_repr

DURATION_HINT = "a duration like 500ms, 5s or 2m"
SIZE_HINT = "a size like 512K, 200M or 1G"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_NUMBER_RE = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")


def _expected(what: str, value: object) -> ValueError:
    return ValueError(f"expected {what}, got {short_repr(value)}")


def _finite_number(value: object) -> float | None:
    """The value as a float if it is a real number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_duration(value: object, *, bare_seconds: bool = False) -> float:
    """Seconds from "500ms", "5s", "2m", "1h", "1m30s" or a bare number.

    A bare number (or numeric string) means milliseconds, as in PM2's ecosystem files
    (`restart_delay: 3000`), unless `bare_seconds` (canonical, already-validated data).
    """
    scale = 1.0 if bare_seconds else 0.001
    number = _finite_number(value)
    if number is None and isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        number = float(value)
    if number is not None:
        if number < 0:
            raise _expected(DURATION_HINT + " (not negative)", value)
        return number * scale
    if isinstance(value, str) and value.strip():
        return _parse_duration_text(value)
    raise _expected(DURATION_HINT, value)


def _parse_duration_text(text: str) -> float:
    total, pos = 0.0, 0
    stripped = text.strip()
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None:
            raise _expected(DURATION_HINT, text)
        total += float(match[1]) * _DURATION_UNITS[match[2].lower()]
        pos = match.end()
    return total


def parse_size(value: object) -> int:
    """Bytes from "512K", "200M", "100MB", "1.5G" (binary units) or a bare number of bytes."""
    number = _finite_number(value)
    if number is not None:
        if number < 0:
            raise _expected(SIZE_HINT + " (not negative)", value)
        return int(number)
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is not None:
            return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])
    raise _expected(SIZE_HINT, value)


def parse_signal(value: object) -> str:
    """The canonical name ("SIGINT") of a signal given as "SIGINT", "INT", "int" or 2."""
    hint = "a signal like SIGINT, TERM or 15"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise _expected(hint, value) from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        # Aliases (SIGIOT, SIGCLD...) come back under their canonical name.
        member = signal.Signals.__members__.get(name)
        if member is not None:
            return member.name
    raise _expected(hint, value)


def parse_umask(value: object) -> int:
    """A umask from "022", "0o022" (always octal as text) or an int (taken as is)."""
    hint = "a umask like '022' (octal, 000 to 777)"
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"(0o)?[0-7]{1,4}", value.strip().lower()):
        number = int(value.strip().lower().removeprefix("0o"), 8)
    else:
        raise _expected(hint, value)
    if not 0 <= number <= 0o777:
        raise _expected(hint, value)
    return number
