"""Hub users and bucket memberships."""

from __future__ import annotations

import re
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import Membership, Session, User
from corral.hub.roles import Role
from corral.panel.security.passwords import hash_password, password_problem, verify_password

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AccountError(ValueError):
    """A user mistake about users or memberships (a message for the user)."""


class WrongPassword(AccountError):
    """The current password given is not the user's (counts as a failed login)."""


def check_username(name: str) -> str:
    if not USERNAME_RE.fullmatch(name):
        raise AccountError(
            f"username {name[:70]!r}: 1 to 64 letters, digits, '.', '_', '@' or '-',"
            " starting with a letter or digit"
        )
    return name


def create_user(db: DbSession, name: str, password: str, *, is_admin: bool = False) -> User:
    check_username(name)
    problem = password_problem(password)
    if problem:
        raise AccountError(f"password for {name}: {problem}")
    if find_user(db, name) is not None:
        raise AccountError(f"user {name} already exists")
    user = User(
        username=name,
        password_hash=hash_password(password),
        is_admin=is_admin,
        disabled=False,
        created_at=time.time(),
    )
    db.add(user)
    db.flush()
    return user


def find_user(db: DbSession, name: str) -> User | None:
    return db.scalar(select(User).where(User.username == name))


def set_role(db: DbSession, user_id: int, bucket_id: int, role: Role) -> None:
    row = db.get(Membership, (user_id, bucket_id))
    if row is None:
        db.add(Membership(user_id=user_id, bucket_id=bucket_id, role=role.label))
    else:
        row.role = role.label
    db.flush()


def roles_of(db: DbSession, user_id: int) -> dict[int, Role]:
    rows = db.scalars(select(Membership).where(Membership.user_id == user_id))
    return {m.bucket_id: Role.parse(m.role) for m in rows}


def change_password(
    db: DbSession, user_id: int, current: str, new: str, *, keep_session: str | None
) -> int:
    """Check `current`, store `new` (argon2id), end the user's other sessions (all but
    `keep_session`, the one asking); how many were ended."""
    user = db.get(User, user_id)
    if user is None or not verify_password(user.password_hash, current):
        raise WrongPassword("this is not your current password")
    problem = password_problem(new)
    if problem:
        raise AccountError(f"new password: {problem}")
    if verify_password(user.password_hash, new):
        raise AccountError("new password: this is your current password; choose a new one")
    user.password_hash = hash_password(new)
    ended = delete(Session).where(Session.user_id == user_id)
    if keep_session is not None:
        ended = ended.where(Session.id != keep_session)
    return int(getattr(db.execute(ended), "rowcount", 0) or 0)
