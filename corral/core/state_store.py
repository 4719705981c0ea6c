"""The daemon's live state file and the dump written by `corral save` (SPEC 1.8).

Both are JSON documents with a `version` key, written atomically with mode 0600. A file
that cannot be used is never silently overwritten: the state file is set aside as
`state.json.corrupt-<timestamp>`, and the dump falls back to the `.bak` copy that every
`save` keeps of the previous dump.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.core.atomic import write_atomic, write_json_atomic

STATE_VERSION = 1
DUMP_VERSION = 1


class DumpError(Exception):
    """Neither the dump nor its backup can be used."""


class DumpMissing(DumpError):
    """There is no dump at all: nothing was ever saved."""


class DumpRefused(DumpError):
    """`save` would replace a dump holding apps with an empty one (needs `force`)."""


class _Unusable(Exception):
    """A file that exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class DumpResult:
    apps: list[dict[str, Any]]
    source: Path
    """The file the apps came from: the dump or its backup."""
    warning: str | None
    """Set when the apps come from the backup: say why, so the user knows."""


class StateStore:
    """`state.json`: the daemon's state, rewritten on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_error: str | None = None
        """Why the last `load` found the file unusable (and where it was moved)."""

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it is unusable."""
        self.last_error = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _parse_state(raw)
        except _Unusable as exc:
            moved = _set_aside(self.path)
            self.last_error = f"{self.path.name} is unusable ({exc}); moved to {moved.name}"
            return None

    def save(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path, {"version": STATE_VERSION, **state}, indent=False)


def _parse_state(raw: bytes) -> dict[str, Any]:
    doc = _parse_json(raw)
    if not isinstance(doc, dict):
        raise _Unusable(f"expected an object, found {_kind(doc)}")
    if doc.get("version") != STATE_VERSION:
        raise _Unusable(f"unsupported version {doc.get('version')!r}")
    return doc


def _set_aside(path: Path) -> Path:
    """Rename an unusable file out of the way (kept for inspection, never overwritten)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    return target


class DumpStore:
    """`dump.json` and its backup `dump.json.bak`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".bak")

    def write(self, apps: list[dict[str, Any]], *, force: bool) -> None:
        """Save `apps`, first copying the current dump (if valid) to the backup."""
        current = _try_load(self.path)
        if not apps and not force:
            # Judge by what `resurrect` would restore now, the backup included.
            held = current or _try_load(self.backup)
            if held is not None and held[1]:
                count = len(held[1])
                raise DumpRefused(
                    f"the dump holds {count} app{'s' if count != 1 else ''}; refusing to "
                    "overwrite it with an empty list (use --force)"
                )
        if current is not None:
            # The exact bytes that were just validated; a corrupt dump never replaces
            # the backup, which is then the last good copy.
            write_atomic(self.backup, current[0])
        saved_at = datetime.now(UTC).isoformat(timespec="seconds")
        doc = {"version": DUMP_VERSION, "saved_at": saved_at, "apps": apps}
        write_json_atomic(self.path, doc)

    def read(self) -> DumpResult:
        """The saved apps, from the dump or, if it is missing or corrupt, the backup."""
        try:
            return DumpResult(_load(self.path)[1], self.path, None)
        except FileNotFoundError:
            problem = None
        except _Unusable as exc:
            problem = f"{self.path.name} is corrupt ({exc})"
        except OSError as exc:
            problem = f"{self.path.name} is unreadable ({exc.strerror})"
        try:
            apps = _load(self.backup)[1]
        except FileNotFoundError:
            if problem is None:
                raise DumpMissing(
                    f"no dump in {self.path.parent}: nothing was saved (run `corral save`)"
                ) from None
            raise DumpError(f"{problem}, and there is no {self.backup.name}") from None
        except (_Unusable, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            first = problem or f"{self.path.name} is missing"
            raise DumpError(f"{first}, and {self.backup.name} is unusable too ({why})") from None
        first = problem or f"{self.path.name} is missing"
        return DumpResult(apps, self.backup, f"{first}; restored from {self.backup.name}")


def _try_load(path: Path) -> tuple[bytes, list[dict[str, Any]]] | None:
    try:
        return _load(path)
    except (_Unusable, OSError):
        return None


def _load(path: Path) -> tuple[bytes, list[dict[str, Any]]]:
    """The bytes and apps of one dump file; FileNotFoundError or _Unusable otherwise."""
    raw = path.read_bytes()
    doc = _parse_json(raw)
    if not isinstance(doc, dict):
        raise _Unusable(f"expected an object, found {_kind(doc)}")
    if doc.get("version") != DUMP_VERSION:
        raise _Unusable(f"unsupported version {doc.get('version')!r}")
    apps = doc.get("apps")
    if not isinstance(apps, list):
        raise _Unusable(f"'apps' should be a list, found {_kind(apps)}")
    for i, app in enumerate(apps):
        if not isinstance(app, dict):
            raise _Unusable(f"apps[{i}] should be an object, found {_kind(app)}")
    return raw, apps


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Unusable(f"not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise _Unusable(f"{exc.msg}: line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _Unusable("nested too deeply") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
