"""Who may do what (SPEC 2.3): the grants, what each route needs, and the check.

Every route declares one `Need` when it is registered (corral/panel/routing.py), so a
test can walk the whole table. The rule for tenant routes: a user with no grant at all
on the tenant gets 404 (the tenant does not exist for them); a user who can see the
tenant but lacks the needed grant gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Right(StrEnum):
    ACCESS = "access"
    """See the tenant and its process list."""
    CONTROL = "control"
    """start / stop / restart / reload / scale."""
    LOGS = "logs"
    """Read, follow, download and clear logs."""
    MANAGE = "manage"
    """Create, delete and edit apps, env and secrets, deploys, webhooks."""


ALL_RIGHTS: frozenset[Right] = frozenset(Right)


class Level(StrEnum):
    PUBLIC = "public"
    """Anyone, logged in or not (login page, static files, health)."""
    USER = "user"
    """Any logged-in user (their own account, the tenant list they can see)."""
    ADMIN = "admin"
    """Server admins only."""
    TENANT = "tenant"
    """A user holding `right` on the tenant named in the path, or an admin."""


@dataclass(frozen=True)
class Need:
    level: Level
    right: Right | None = None

    def __str__(self) -> str:
        return f"tenant:{self.right}" if self.right else self.level.value


PUBLIC = Need(Level.PUBLIC)
USER = Need(Level.USER)
ADMIN = Need(Level.ADMIN)


def tenant(right: Right) -> Need:
    return Need(Level.TENANT, right)


@dataclass(frozen=True)
class Principal:
    """A logged-in user as the permission checks see them (cached for at most 10 s)."""

    user_id: int
    username: str
    is_admin: bool
    rights: dict[int, frozenset[Right]] = field(default_factory=dict)
    """tenant id -> the user's rights there (admins: empty, they have everything)."""
    session_id: str | None = None
    """The session's id (hash); None for API-token requests."""
    csrf_token: str | None = None

    def rights_on(self, tenant_id: int) -> frozenset[Right]:
        return ALL_RIGHTS if self.is_admin else self.rights.get(tenant_id, frozenset())

    def sees(self, tenant_id: int) -> bool:
        return self.is_admin or bool(self.rights.get(tenant_id))

    def may(self, tenant_id: int, right: Right) -> bool:
        return right in self.rights_on(tenant_id)


class Decision(StrEnum):
    ALLOW = "allow"
    LOGIN = "login"
    """Anonymous on a protected route: 401 (API) or a redirect to /login (HTML)."""
    HIDDEN = "hidden"
    """404: the tenant (or object) does not exist for this user."""
    FORBIDDEN = "forbidden"
    """403: visible, but this user lacks the right."""


def decide(need: Need, who: Principal | None, tenant_id: int | None) -> Decision:
    if need.level is Level.PUBLIC:
        return Decision.ALLOW
    if who is None:
        return Decision.LOGIN
    if need.level is Level.USER:
        return Decision.ALLOW
    if need.level is Level.ADMIN:
        return Decision.ALLOW if who.is_admin else Decision.HIDDEN
    assert need.right is not None
    if tenant_id is None or not who.sees(tenant_id):
        return Decision.HIDDEN
    return Decision.ALLOW if who.may(tenant_id, need.right) else Decision.FORBIDDEN
