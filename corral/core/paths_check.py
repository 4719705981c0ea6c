"""`resolve_paths`: the daemon checks a tenant's paths with its own (the tenant's) rights.

In isolated mode the panel runs as another uid and cannot see a tenant's private folders,
so it asks the tenant's daemon: each path is resolved (symlinks followed, `..` resolved) by
`corral.confine.confine`, the same algorithm the panel uses in development mode, and must
lead inside the daemon's tenant home, the parent of CORRAL_HOME. The home is never one a
caller names. Blocking: call it in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, cast

from corral.confine import PathOutsideHome, confine

MAX_ENTRIES = 64
MAX_PATH_BYTES = 4096
_KINDS = ("file", "dir", "any")
_ENTRY_KEYS = frozenset({"path", "kind", "must_exist", "base"})


class BadRequest(ValueError):
    """The request itself is malformed (not one path's problem); says what and where."""


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadRequest(f"{where} is longer than {MAX_PATH_BYTES} bytes")
    return value


def parse_request(args: dict[str, Any], home: Path) -> list[dict[str, Any]]:
    """The entries of a `resolve_paths` request, checked; BadRequest otherwise."""
    unknown = set(args) - {"home", "paths"}
    if unknown:
        raise BadRequest(f"unknown argument {sorted(unknown)[0]!r}")
    named = args.get("home")
    if named is not None:
        text = _text(named, "'home'")
        if os.path.normpath(text) != str(home) and os.path.realpath(text) != str(home):
            raise BadRequest(f"'home' must be this daemon's tenant home ({home})")
    paths = args.get("paths")
    if not isinstance(paths, list):
        raise BadRequest("'paths' must be a list of {path, kind, must_exist, base} objects")
    if len(paths) > MAX_ENTRIES:
        raise BadRequest(f"'paths' has {len(paths)} entries; at most {MAX_ENTRIES}")
    entries = []
    for index, entry in enumerate(paths):
        where = f"paths[{index}]"
        if not isinstance(entry, dict):
            raise BadRequest(f"{where} must be an object")
        extra = set(entry) - _ENTRY_KEYS
        if extra:
            raise BadRequest(f"{where}: unknown key {sorted(extra)[0]!r}")
        kind = entry.get("kind", "any")
        if kind not in _KINDS:
            raise BadRequest(f"{where}.kind must be 'file', 'dir' or 'any'")
        must_exist = entry.get("must_exist", False)
        if not isinstance(must_exist, bool):
            raise BadRequest(f"{where}.must_exist must be true or false")
        base = entry.get("base")
        entries.append(
            {
                "path": _text(entry.get("path"), f"{where}.path"),
                "kind": kind,
                "must_exist": must_exist,
                "base": None if base is None else _text(base, f"{where}.base"),
            }
        )
    return entries


def tenant_home(corral_home: Path) -> Path:
    """The home a daemon confines to: the parent of CORRAL_HOME, resolved."""
    return Path(os.path.realpath(corral_home.parent))


def _one(home: Path, entry: dict[str, Any]) -> dict[str, Any]:
    try:
        base = None
        if entry["base"] is not None:
            # A base leaving the home is refused too, even if the path would come back.
            base = confine(home, entry["base"], kind="dir")
        kind = cast(Literal["file", "dir", "any"], entry["kind"])
        path = confine(home, entry["path"], base=base, must_exist=entry["must_exist"], kind=kind)
    except PathOutsideHome as exc:
        return {"ok": False, "error": " ".join(str(exc).split())}
    return {"ok": True, "path": str(path)}


def resolve_paths(home: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One answer per entry, in order: {"ok": true, "path"} or {"ok": false, "error"}."""
    return [_one(home, entry) for entry in entries]
