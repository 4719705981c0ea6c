"""Creating users: shared by `corral panel create-admin`, first run and the admin screens."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from corral.panel.db.models import User
from corral.panel.security.passwords import hash_password, password_problem
from corral.panel.validation import FieldError
from corral.panel.validation import username as check_username


def create_user(db: DbSession, name: str, password: str, *, is_admin: bool = False) -> User:
    """Validate and add a user; raises FieldError naming the field at fault."""
    name = check_username(name)
    problem = password_problem(password)
    if problem:
        raise FieldError("password", problem)
    if db.scalar(select(User).where(User.username == name)) is not None:
        raise FieldError("username", f"a user named {name!r} already exists")
    now = time.time()
    user = User(
        username=name,
        password_hash=hash_password(password),
        is_admin=is_admin,
        disabled=False,
        created_at=now,
        password_changed_at=now,
    )
    db.add(user)
    db.flush()
    return user


def user_count(db: DbSession) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0


def find_user(db: DbSession, name: str) -> User | None:
    return db.scalar(select(User).where(User.username == name.strip().lower()))
