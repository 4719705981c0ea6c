"""Hub sessions, as the panel's (corral/panel/auth.py): the cookie carries a random token,
the database its SHA-256; a session ends on logout, when idle too long, or at its
absolute limit. Roles are read on every request (no cache: a removed member is out at
once)."""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.orm import Session as DbSession

from corral.hub.accounts import roles_of
from corral.hub.config import HubConfig
from corral.hub.db.engine import Database
from corral.hub.db.models import Session, User
from corral.hub.roles import Principal
from corral.panel.security.tokens import hash_token, new_csrf_token, new_session_id

LAST_SEEN_WRITE_EVERY = 60.0


def create_session(db: DbSession, user: User, address: str) -> str:
    """A new session (login rotates the id); the cookie's token."""
    token = new_session_id()
    now = time.time()
    db.add(
        Session(
            id=hash_token(token),
            user_id=user.id,
            csrf_token=new_csrf_token(),
            created_at=now,
            last_seen_at=now,
            address=address[:64],
        )
    )
    return token


def end_session(database: Database, token: str) -> None:
    with database.session() as db:
        db.execute(delete(Session).where(Session.id == hash_token(token)))


def from_session(database: Database, config: HubConfig, token: str) -> Principal | None:
    now = time.time()
    with database.session() as db:
        session = db.get(Session, hash_token(token))
        if session is None:
            return None
        user = db.get(User, session.user_id)
        idle_end = session.last_seen_at + config.session_idle_seconds
        absolute_end = session.created_at + config.session_absolute_seconds
        if user is None or user.disabled or now >= idle_end or now >= absolute_end:
            db.delete(session)
            return None
        if now - session.last_seen_at >= LAST_SEEN_WRITE_EVERY:
            session.last_seen_at = now
        return Principal(
            user_id=user.id,
            username=user.username,
            is_admin=user.is_admin,
            roles=roles_of(db, user.id),
            csrf_token=session.csrf_token,
            session_id=session.id,
        )
