"""Sessions, API tokens and the permission cache (SPEC 2.4, 2.7).

The cookie carries a random token; the database keeps only its SHA-256 (a stolen
database does not yield live sessions). A session ends on logout, after
`session_idle_seconds` without a request, or `session_absolute_seconds` after login.
The principal (user + rights) of a session is cached for at most
`permission_cache_seconds`; logout, a grant change or a user change drop it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import ApiToken, Grant, Session, User
from corral.panel.permissions import Principal, Right
from corral.panel.security.tokens import hash_token, new_csrf_token, new_session_id

LAST_SEEN_WRITE_EVERY = 60.0
"""Refresh a session's last_seen at most this often (not one write per request)."""


def cookie_name(config: PanelConfig) -> str:
    """`__Host-` needs Secure, which needs TLS (or a browser treating loopback as secure)."""
    return "__Host-corral_session" if config.tls else "corral_session"


@dataclass
class _Cached:
    principal: Principal
    loaded_at: float
    expires_at: float
    """When the session itself ends (idle or absolute), whichever first."""


def load_principal(db: DbSession, user: User, session: Session | None) -> Principal:
    rights: dict[int, set[Right]] = {}
    for grant in db.scalars(select(Grant).where(Grant.user_id == user.id)):
        rights.setdefault(grant.tenant_id, set()).add(Right(grant.right))
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        rights={t: frozenset(r) for t, r in rights.items()},
        session_id=session.id if session else None,
        csrf_token=session.csrf_token if session else None,
    )


class Authenticator:
    """Turns a session cookie or a bearer token into a Principal, with the 10 s cache."""

    def __init__(
        self, database: Database, config: PanelConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.database = database
        self.config = config
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    # -- sessions

    def create_session(self, db: DbSession, user: User, address: str, agent: str) -> str:
        """A brand-new session (new id: login rotates it); returns the cookie token."""
        token = new_session_id()
        now = self.clock()
        db.add(
            Session(
                id=hash_token(token),
                user_id=user.id,
                csrf_token=new_csrf_token(),
                created_at=now,
                last_seen_at=now,
                address=address[:64],
                user_agent=agent[:255],
            )
        )
        return token

    def end_session(self, token: str) -> None:
        session_id = hash_token(token)
        with self.database.session() as db:
            db.execute(delete(Session).where(Session.id == session_id))
        with self._lock:
            self._cache.pop(session_id, None)

    def end_user_sessions(self, db: DbSession, user_id: int) -> None:
        db.execute(delete(Session).where(Session.user_id == user_id))
        self.invalidate_user(user_id)

    def from_session(self, token: str) -> Principal | None:
        session_id = hash_token(token)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(session_id)
        ttl = self.config.permission_cache_seconds
        # A negative age means the wall clock stepped back: the entry's age is unknown.
        if cached and 0 <= now - cached.loaded_at < ttl and now < cached.expires_at:
            return cached.principal
        with self.database.session() as db:
            session = db.get(Session, session_id)
            if session is None:
                self._forget(session_id)
                return None
            idle_end = session.last_seen_at + self.config.session_idle_seconds
            absolute_end = session.created_at + self.config.session_absolute_seconds
            user = db.get(User, session.user_id)
            if now >= idle_end or now >= absolute_end or user is None or user.disabled:
                db.delete(session)
                self._forget(session_id)
                return None
            if now - session.last_seen_at >= LAST_SEEN_WRITE_EVERY:
                session.last_seen_at = now
                idle_end = now + self.config.session_idle_seconds
            principal = load_principal(db, user, session)
        with self._lock:
            self._cache[session_id] = _Cached(principal, now, min(idle_end, absolute_end))
        return principal

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)

    # -- API tokens (not cached: one indexed lookup, and revocation must bite at once)

    def from_api_token(self, token: str) -> Principal | None:
        now = self.clock()
        with self.database.session() as db:
            row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
            if row is None or (row.expires_at is not None and now >= row.expires_at):
                return None
            user = db.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            if row.last_used_at is None or now - row.last_used_at >= LAST_SEEN_WRITE_EVERY:
                row.last_used_at = now
            return load_principal(db, user, None)

    # -- invalidation

    def invalidate_user(self, user_id: int) -> None:
        """Grants or the user changed: the next request reloads from the database."""
        with self._lock:
            for key in [k for k, v in self._cache.items() if v.principal.user_id == user_id]:
                del self._cache[key]

    def invalidate_all(self) -> None:
        """A tenant was deleted (its grants went with it)."""
        with self._lock:
            self._cache.clear()
