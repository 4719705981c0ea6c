"""Per-bucket roles, exactly as SPEC 5, and what each route needs.

viewer: read only. developer: + trigger remote actions, delete collected metrics and
errors, manage alerts. admin: + add users, remove servers. owner: + bucket settings,
remove users, change roles, delete the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum


class Role(IntEnum):
    VIEWER = 1
    DEVELOPER = 2
    ADMIN = 3
    OWNER = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}: one of {names}") from None


class Level(Enum):
    PUBLIC = "public"
    USER = "user"
    HUB_ADMIN = "hub_admin"
    BUCKET = "bucket"


@dataclass(frozen=True)
class Need:
    level: Level
    role: Role | None = None

    def __str__(self) -> str:
        return self.role.label if self.role else self.level.value


PUBLIC = Need(Level.PUBLIC)
USER = Need(Level.USER)
HUB_ADMIN = Need(Level.HUB_ADMIN)
VIEWER = Need(Level.BUCKET, Role.VIEWER)
DEVELOPER = Need(Level.BUCKET, Role.DEVELOPER)
ADMIN = Need(Level.BUCKET, Role.ADMIN)
OWNER = Need(Level.BUCKET, Role.OWNER)


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    is_admin: bool
    roles: dict[int, Role] = field(default_factory=dict)
    """bucket id -> role"""
    csrf_token: str | None = None
    session_id: str | None = None


class Decision(Enum):
    ALLOW = "allow"
    LOGIN = "login"
    HIDDEN = "hidden"  # 404: not a member of this bucket (or no such bucket)
    FORBIDDEN = "forbidden"  # 403: a member without the role


def decide(need: Need, principal: Principal | None, bucket_id: int | None) -> Decision:
    if need.level is Level.PUBLIC:
        return Decision.ALLOW
    if principal is None:
        return Decision.LOGIN
    if need.level is Level.USER:
        return Decision.ALLOW
    if need.level is Level.HUB_ADMIN:
        return Decision.ALLOW if principal.is_admin else Decision.FORBIDDEN
    role = principal.roles.get(bucket_id) if bucket_id is not None else None
    if role is None:
        return Decision.HIDDEN
    assert need.role is not None
    return Decision.ALLOW if role >= need.role else Decision.FORBIDDEN
