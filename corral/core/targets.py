"""Resolve a CLI target (id, name, `all`, `/regex/`) to apps, as PM2 does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol, TypeVar

from corral.protocol.wire import ErrorCode, ProtocolError


class Named(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def resolve(target: str, apps: Iterable[T]) -> list[T]:
    """Apps matched by `target`, in id order; raise UNKNOWN_TARGET when none match."""
    ordered = sorted(apps, key=lambda app: app.id)
    if target == "all":
        return ordered
    if len(target) >= 2 and target.startswith("/") and target.endswith("/"):
        try:
            pattern = re.compile(target[1:-1])
        except re.error as exc:
            raise ProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"bad regular expression {target}: {exc}"
            ) from None
        matched = [app for app in ordered if pattern.search(app.name)]
    elif target.isdigit():
        matched = [app for app in ordered if app.id == int(target)]
        if not matched:  # an app may be named with digits only
            matched = [app for app in ordered if app.name == target]
    else:
        matched = [app for app in ordered if app.name == target]
    if not matched:
        raise ProtocolError(ErrorCode.UNKNOWN_TARGET, f"no app matches {target!r}")
    return matched


def resolve_many(targets: Iterable[str], apps: Iterable[T]) -> list[T]:
    pool = list(apps)
    seen: dict[int, T] = {}
    for target in targets:
        for app in resolve(target, pool):
            seen.setdefault(app.id, app)
    return sorted(seen.values(), key=lambda app: app.id)
