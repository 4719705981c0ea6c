"""Hub users and bucket memberships."""

from __future__ import annotations

import re
import time

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from corral.hub.db.models import Membership, User
from corral.hub.roles import Role
from corral.panel.security.passwords import hash_password, password_problem

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AccountError(ValueError):
    """A user mistake about users or memberships (a message for the user)."""


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
