"""Deploy webhooks as the panel keeps them: enable, rotate, disable, the view the deploy
page shows (`webhook_view`), and checking a delivery's credentials against the table.

A token is 32 random bytes (`secrets.token_urlsafe(32)`), shown once by enable and
rotate. The table keeps its SHA-256 and a sealed copy (cipher.py), never the token.
"""

from __future__ import annotations

import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from corral.panel.db.models import DeployHook, Tenant
from corral.panel.services import TenantRef
from corral.panel.webhooks.cipher import HookCipher
from corral.panel.webhooks.limiter import DeliveryMemory, RateLimiter
from corral.panel.webhooks.verify import (
    Credentials,
    signature_matches,
    token_digest,
    token_matches,
)

if TYPE_CHECKING:
    from corral.panel.services import Panel

HOOK_PATH = "/hooks/deploy/"
TOKEN_BYTES = 32
PUBLIC_ID_BYTES = 18
ADDRESS_BURST, ADDRESS_PER_MINUTE = 30, 30.0
"""One client address: 30 requests at once, then one every 2 s."""
HOOK_BURST, HOOK_PER_MINUTE = 10, 10.0
"""One hook id: 10 requests at once, then one every 6 s (deploys queue up anyway)."""


class HookError(Exception):
    """A management request that cannot be done; `status` and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class HookState:
    """What the endpoint keeps per panel: the cipher, the limits, the replay memory."""

    cipher: HookCipher
    by_address: RateLimiter = field(
        default_factory=lambda: RateLimiter(ADDRESS_BURST, ADDRESS_PER_MINUTE)
    )
    by_hook: RateLimiter = field(default_factory=lambda: RateLimiter(HOOK_BURST, HOOK_PER_MINUTE))
    deliveries: DeliveryMemory = field(default_factory=DeliveryMemory)
    _dummy: tuple[str, str, str] | None = None

    def dummy(self) -> tuple[str, str, str]:
        """(public id, sealed token, token digest) of a hook that does not exist: an
        unknown hook id is checked against it, so it costs what a known one costs."""
        if self._dummy is None:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            # 25 characters: a real public id has 24, so this one never matches a row.
            public_id = "-" + secrets.token_urlsafe(PUBLIC_ID_BYTES)
            self._dummy = (public_id, self.cipher.seal(token, public_id), token_digest(token))
        return self._dummy


_STATES: weakref.WeakKeyDictionary[Panel, HookState] = weakref.WeakKeyDictionary()


def state_of(panel: Panel) -> HookState:
    state = _STATES.get(panel)
    if state is None:
        state = _STATES[panel] = HookState(HookCipher.for_home(panel.config.home))
    return state


def install_state(panel: Panel, state: HookState) -> None:
    """Use `state` for this panel (tests: limits with their own clock)."""
    _STATES[panel] = state


# --- management -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    public_id: str
    token: str
    """Shown once; never stored."""


def _row(db: Any, tenant: TenantRef, app: str) -> DeployHook | None:
    row: DeployHook | None = db.scalar(
        select(DeployHook).where(DeployHook.tenant_id == tenant.id, DeployHook.app == app)
    )
    return row


def enable(panel: Panel, tenant: TenantRef, app: str, actor: str) -> Issued:
    """A new hook with a new token; HookError 409 when the app already has one."""
    cipher = state_of(panel).cipher
    token = secrets.token_urlsafe(TOKEN_BYTES)
    public_id = secrets.token_urlsafe(PUBLIC_ID_BYTES)
    sealed = cipher.seal(token, public_id)
    with panel.database.session() as db:
        if _row(db, tenant, app) is not None:
            raise HookError(
                409, f"the webhook of {app} is already enabled: rotate its token or disable it"
            )
        db.add(
            DeployHook(
                public_id=public_id,
                tenant_id=tenant.id,
                app=app,
                token_sha256=token_digest(token),
                signing_key=sealed,
                created_at=time.time(),
                created_by=actor[:64],
            )
        )
    return Issued(public_id, token)


def rotate(panel: Panel, tenant: TenantRef, app: str) -> Issued:
    """A new token for the app's hook (same URL); the old token stops working at once."""
    cipher = state_of(panel).cipher
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with panel.database.session() as db:
        row = _row(db, tenant, app)
        if row is None:
            raise HookError(404, f"{app} has no webhook: enable it first")
        row.token_sha256 = token_digest(token)
        row.signing_key = cipher.seal(token, row.public_id)
        row.rotated_at = time.time()
        return Issued(row.public_id, token)


def disable(panel: Panel, tenant: TenantRef, app: str) -> str:
    """Remove the app's hook; returns its public id. HookError 404 when there is none."""
    with panel.database.session() as db:
        row = _row(db, tenant, app)
        if row is None:
            raise HookError(404, f"{app} has no webhook")
        public_id = row.public_id
        db.execute(delete(DeployHook).where(DeployHook.id == row.id))
        return public_id


def webhook_view(
    panel: Panel, tenant: TenantRef, app: str, issued: Issued | None = None
) -> dict[str, Any]:
    """What `_webhook.html` shows: whether the app has a hook, its URL (`path`; `url` when
    the panel knows its public origin), times, and the token when it was just issued."""
    with panel.database.session() as db:
        row = _row(db, tenant, app)
        hook: dict[str, Any] | None = (
            None
            if row is None
            else {
                "public_id": row.public_id,
                "created_at": row.created_at,
                "created_by": row.created_by,
                "rotated_at": row.rotated_at,
                "last_used_at": row.last_used_at,
            }
        )
    view: dict[str, Any] = {
        "tenant": tenant.name,
        "app": app,
        "enabled": hook is not None,
        "actions": f"/t/{tenant.name}/apps/{app}/webhook",
        "path": None,
        "url": None,
        "token": None,
        "created_at": None,
        "created_by": None,
        "rotated_at": None,
        "last_used_at": None,
    }
    if hook is not None:
        view.update(hook)
        view["path"] = HOOK_PATH + hook["public_id"]
        if panel.config.public_origin:
            view["url"] = panel.config.public_origin.rstrip("/") + view["path"]
    if issued is not None and hook is not None and issued.public_id == hook["public_id"]:
        view["token"] = issued.token
    return view


def public_view(view: dict[str, Any]) -> dict[str, Any]:
    """The API's answer: the view without the template's `actions`."""
    return {k: v for k, v in view.items() if k != "actions"}


# --- deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    ok: bool
    tenant: TenantRef | None
    """Set when the hook id is known (right credentials or not)."""
    app: str | None


def check_delivery(panel: Panel, hook_id: str, creds: Credentials, body: bytes) -> Checked:
    """Whether `creds` are right for the hook `hook_id`. An unknown id goes through the
    same steps against a dummy hook (one query, one unseal for GitHub, one constant-time
    compare), so its answer and its cost are those of a wrong token."""
    state = state_of(panel)
    with panel.database.session() as db:
        found = db.execute(
            select(
                DeployHook.public_id,
                DeployHook.token_sha256,
                DeployHook.signing_key,
                DeployHook.app,
                Tenant,
            )
            .join(Tenant, Tenant.id == DeployHook.tenant_id)
            .where(DeployHook.public_id == hook_id[:64])
        ).first()
        tenant = TenantRef.of(found[4]) if found is not None else None
        app: str | None = found[3] if found is not None else None
    public_id, sealed, digest = (found[0], found[2], found[1]) if found else state.dummy()
    if creds.format == "github":
        token = state.cipher.open(sealed, public_id)
        ok = signature_matches(token or "", body, creds.secret) and token is not None
    else:
        ok = token_matches(creds.secret, digest)
    return Checked(ok and found is not None, tenant, app)


def mark_used(panel: Panel, hook_id: str) -> None:
    with panel.database.session() as db:
        db.execute(
            update(DeployHook)
            .where(DeployHook.public_id == hook_id)
            .values(last_used_at=time.time())
        )


def verify_credentials(headers: dict[str, str]) -> Credentials:
    """`verify.credentials` on a plain dict of headers (any case), for callers and tests."""
    from corral.panel.webhooks.verify import credentials

    return credentials({k.lower(): v for k, v in headers.items()})
