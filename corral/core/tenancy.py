"""A tenant daemon's confinement (SPEC 2.2), read once from its environment at start.

The privileged helper starts each tenant's daemon with CORRAL_PANEL_UID,
CORRAL_PANEL_GID and CORRAL_APP_LIMIT. A bad value stops the daemon (exit 2) rather than
letting it run unconfined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

PANEL_UID_ENV = "CORRAL_PANEL_UID"
PANEL_GID_ENV = "CORRAL_PANEL_GID"
APP_LIMIT_ENV = "CORRAL_APP_LIMIT"

UNLIMITED = -1
MAX_ID = 2**32 - 2
"""The largest valid uid or gid: (uid_t)-1 means "no id" to the kernel."""
_INT_RE = re.compile(r"-?[0-9]{1,12}")

peer_uid: ContextVar[int | None] = ContextVar("corral_peer_uid", default=None)
"""The uid of the control connection whose request is being handled (SO_PEERCRED), set by
the server for each connection; None outside a connection."""


class TenancyError(ValueError):
    """A tenant-mode value is invalid; the message names the variable and what is wrong."""


def parse_limit(value: object, where: str) -> int:
    """An app limit: a whole number >= -1 (-1 unlimited, 0 no app). `where` names it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < UNLIMITED:
        raise TenancyError(
            f"{where} must be a whole number >= -1 (-1: unlimited, 0: no app), not {value!r}"
        )
    return value


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise TenancyError(f"{name}={raw!r} is not a whole number")
    return int(raw)


def _env_id(env: Mapping[str, str], name: str) -> int | None:
    value = _env_int(env, name)
    if value is not None and not 0 <= value <= MAX_ID:
        raise TenancyError(f"{name}={value} is not a valid id (0 to {MAX_ID})")
    return value


@dataclass(frozen=True)
class TenantMode:
    panel_uid: int | None = None
    """This uid may use the control socket too, and change the app limit."""
    panel_gid: int | None = None
    """The panel's group: the home keeps its group r-x bits and the socket is 0660 when
    they belong to it."""
    app_limit: int = UNLIMITED
    """How many apps (names, not instances) the daemon may hold; -1 unlimited."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TenantMode:
        """Raises TenancyError for a value that is not a whole number or out of range."""
        limit = _env_int(env, APP_LIMIT_ENV)
        if limit is not None:
            parse_limit(limit, APP_LIMIT_ENV)
        return cls(
            panel_uid=_env_id(env, PANEL_UID_ENV),
            panel_gid=_env_id(env, PANEL_GID_ENV),
            app_limit=UNLIMITED if limit is None else limit,
        )

    def may_connect(self, uid: int, own_uid: int) -> bool:
        """The daemon's own user, root, and the panel's user may use the control socket."""
        return uid in (own_uid, 0) or uid == self.panel_uid

    def may_set_limit(self, uid: int | None) -> bool:
        """Only root or the panel's user may change the app limit (never the tenant)."""
        return uid is not None and (uid == 0 or uid == self.panel_uid)
