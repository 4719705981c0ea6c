"""The server admin's screens and their API (SPEC 2.3, 2.5): users, tenants, grants, app
limits and settings.

Every action is one transaction and one or more audit entries (failures too). After any
change to a user or their grants the user's cached permissions are dropped at once
(`Authenticator.invalidate_user`), and a user who is disabled, deleted or given a new
password loses their sessions. The panel never loses its last working admin: deleting,
disabling or demoting the last enabled admin is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as DbSession
from starlette.responses import JSONResponse, Response

from corral.panel.db.models import Grant, Session, Tenant, User
from corral.panel.helper_client import HelperClient, HelperError
from corral.panel.openapi import QueryParam, describe
from corral.panel.permissions import ADMIN, Right
from corral.panel.routing import Ctx, HttpError, registry
from corral.panel.security.passwords import generate_password, hash_password, password_problem
from corral.panel.services import Panel, TenantRef
from corral.panel.settings import SETTINGS, SettingError, get_setting, set_setting
from corral.panel.tenants_service import (
    STATUS_TIMEOUT,
    HelperFailed,
    TenantError,
    create_tenant,
    daemon_state,
    daemon_states,
    panel_made,
    push_app_limit,
    remove_tenant,
    set_app_limit,
)
from corral.panel.users import create_user
from corral.panel.validation import FieldError, FieldErrors, boolean
from corral.panel.validation import username as check_username

RIGHTS: tuple[str, ...] = tuple(r.value for r in Right)
"""access, control, logs, manage: the order the screens show them in."""
IMPLY_ACCESS = frozenset(RIGHTS) - {Right.ACCESS.value}

FLASHES = {
    "user-created": "The user was created.",
    "user-disabled": "The user was disabled and logged out everywhere.",
    "user-enabled": "The user can log in again.",
    "user-admin": "The user is now a server admin.",
    "user-not-admin": "The user is no longer a server admin.",
    "user-deleted": "The user was deleted.",
    "user-sessions": "The user was logged out everywhere.",
    "user-totp-off": "Two-factor codes were turned off for the user.",
    "grants": "The grants were saved; they apply from the user's next request.",
    "tenant-created": "The tenant was created.",
    "tenant-limit": "The app limit was saved.",
    "tenant-deleted": "The tenant was removed; its daemon was stopped.",
    "settings": "The settings were saved.",
}


def _flash(ctx: Ctx) -> str:
    return FLASHES.get(ctx.request.query_params.get("done", ""), "")


def _invalid(exc: FieldErrors) -> Response:
    return JSONResponse({"error": str(exc), "errors": exc.errors}, status_code=422)


def _refused(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=409)


class Refused(Exception):
    """The action is understood but not allowed (the last admin, yourself): 409."""


# --- grants


def normalise_rights(values: Iterable[object], field: str) -> frozenset[str]:
    """Known rights only; `control`, `logs` and `manage` bring `access` with them (a
    right on a tenant one cannot see would be useless, and confusing)."""
    rights: set[str] = set()
    for value in values:
        if not isinstance(value, str) or value not in RIGHTS:
            raise FieldError(field, f"unknown right {value!r}: use {', '.join(RIGHTS)}")
        rights.add(value)
    if rights & IMPLY_ACCESS:
        rights.add(Right.ACCESS.value)
    return frozenset(rights)


def _ordered(rights: Iterable[str]) -> list[str]:
    return [r for r in RIGHTS if r in set(rights)]


@dataclass(frozen=True)
class GrantChange:
    user_id: int
    username: str
    tenant: str
    before: frozenset[str]
    after: frozenset[str]

    def describe(self) -> str:
        now = ", ".join(_ordered(self.after)) or "none"
        was = ", ".join(_ordered(self.before)) or "none"
        return f"user {self.username!r} on {self.tenant!r}: {now} (was: {was})"


def apply_grants(
    db: DbSession, wanted: Mapping[tuple[int, int], frozenset[str]]
) -> list[GrantChange]:
    """Set the rights of each (user id, tenant id) to exactly the given set."""
    changes: list[GrantChange] = []
    for (user_id, tenant_id), after in wanted.items():
        rows = list(
            db.scalars(select(Grant).where(Grant.user_id == user_id, Grant.tenant_id == tenant_id))
        )
        before = frozenset(row.right for row in rows)
        if before == after:
            continue
        for row in rows:
            if row.right not in after:
                db.delete(row)
        for right in after - before:
            db.add(Grant(user_id=user_id, tenant_id=tenant_id, right=right))
        user, tenant = db.get(User, user_id), db.get(Tenant, tenant_id)
        assert user is not None and tenant is not None
        changes.append(GrantChange(user_id, user.username, tenant.name, before, after))
    db.flush()
    return changes


def _after_grants(ctx: Ctx, changes: list[GrantChange]) -> None:
    for user_id in {c.user_id for c in changes}:
        ctx.panel.auth.invalidate_user(user_id)
    for change in changes:
        ctx.audit("grants.set", tenant=change.tenant, detail=change.describe())


def rights_by_tenant(db: DbSession, user_id: int) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for row in db.scalars(select(Grant).where(Grant.user_id == user_id)):
        out.setdefault(row.tenant_id, set()).add(row.right)
    return out


def rights_by_user(db: DbSession, tenant_id: int) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for row in db.scalars(select(Grant).where(Grant.tenant_id == tenant_id)):
        out.setdefault(row.user_id, set()).add(row.right)
    return out


def _matrix_from_form(data: Mapping[str, Any], row_prefix: str) -> dict[int, frozenset[str]]:
    """The page's checkbox grid: `<row_prefix><id>` marks a row shown on the page (only
    those rows are changed: one added meanwhile keeps its grants), `g-<id>-<right>` a
    ticked box."""
    rows: dict[int, set[str]] = {}
    for key in data:
        if key.startswith(row_prefix) and key[len(row_prefix) :].isdigit():
            rows[int(key[len(row_prefix) :])] = set()
    for key, value in data.items():
        parts = key.split("-")
        if len(parts) == 3 and parts[0] == "g" and parts[1].isdigit() and value == "on":
            row = int(parts[1])
            if row in rows and parts[2] in RIGHTS:
                rows[row].add(parts[2])
    return {row: normalise_rights(rights, "grants") for row, rights in rows.items()}


def _rights_from_json(data: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """{"grants": {name: [rights]}} from an API body; FieldErrors names bad entries."""
    grants = data.get("grants")
    if not isinstance(grants, dict):
        raise FieldErrors({"grants": 'expected an object: {"name": ["access", ...], ...}'})
    out: dict[str, frozenset[str]] = {}
    errors: dict[str, str] = {}
    for name, rights in grants.items():
        field = f"grants.{name}"
        if not isinstance(rights, list):
            errors[field] = "expected a list of rights"
            continue
        try:
            out[str(name)] = normalise_rights(rights, field)
        except FieldError as exc:
            errors[exc.field] = exc.message
    if errors:
        raise FieldErrors(errors)
    return out


# --- users


@dataclass(frozen=True)
class UserView:
    id: int
    username: str
    is_admin: bool
    disabled: bool
    totp: bool
    created_at: float
    password_changed_at: float
    sessions: int
    grants: dict[str, list[str]]
    """tenant name -> rights"""

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "is_admin": self.is_admin,
            "disabled": self.disabled,
            "totp": self.totp,
            "created_at": self.created_at,
            "password_changed_at": self.password_changed_at,
            "sessions": self.sessions,
            "grants": self.grants,
        }


def _view(db: DbSession, user: User, tenant_names: Mapping[int, str]) -> UserView:
    sessions = db.scalar(
        select(func.count()).select_from(Session).where(Session.user_id == user.id)
    )
    grants = {
        tenant_names[tid]: _ordered(rights)
        for tid, rights in sorted(
            rights_by_tenant(db, user.id).items(), key=lambda item: tenant_names.get(item[0], "")
        )
        if tid in tenant_names
    }
    return UserView(
        user.id,
        user.username,
        user.is_admin,
        user.disabled,
        bool(user.totp_secret),
        user.created_at,
        user.password_changed_at,
        sessions or 0,
        grants,
    )


def _tenant_names(db: DbSession) -> dict[int, str]:
    return {row.id: row.name for row in db.scalars(select(Tenant).order_by(Tenant.name))}


def list_users(ctx: Ctx) -> list[UserView]:
    with ctx.panel.database.session() as db:
        names = _tenant_names(db)
        return [_view(db, u, names) for u in db.scalars(select(User).order_by(User.username))]


def get_user(ctx: Ctx, user_id: int) -> UserView:
    with ctx.panel.database.session() as db:
        return _view(db, _user(db, user_id), _tenant_names(db))


def _user(db: DbSession, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise HttpError(404, "no such user")
    return user


def _other_working_admins(db: DbSession, user_id: int) -> int:
    """Enabled admins other than this user. The rows are locked (PostgreSQL) so that two
    admins removing each other at once cannot both succeed."""
    stmt = (
        select(User.id)
        .where(User.is_admin.is_(True), User.disabled.is_(False), User.id != user_id)
        .with_for_update()
    )
    return len(list(db.scalars(stmt)))


def _keep_an_admin(db: DbSession, user: User, doing: str) -> None:
    if user.is_admin and not user.disabled and _other_working_admins(db, user.id) == 0:
        raise Refused(f"cannot {doing} {user.username!r}: the panel would have no admin left")


def _new_password(data: Mapping[str, Any], field: str = "password") -> tuple[str, bool]:
    """The password given, or a generated one when the field is empty: (password, made)."""
    value = data.get(field)
    if value is None or value == "":
        return generate_password(), True
    if not isinstance(value, str):
        raise FieldErrors({field: "must be text"})
    problem = password_problem(value)
    if problem:
        raise FieldErrors({field: problem})
    return value, False


def create_user_action(ctx: Ctx, data: Mapping[str, Any]) -> tuple[UserView, str | None]:
    """Create a user; returns the generated password when none was given."""
    errors: dict[str, str] = {}
    password, made = "", False
    try:
        password, made = _new_password(data)
    except FieldErrors as exc:
        errors.update(exc.errors)
    is_admin = False
    try:
        is_admin = boolean(data.get("is_admin", False), "is_admin")
    except FieldError as exc:
        errors[exc.field] = exc.message
    name = data.get("username", "")
    if errors:
        try:  # report a bad user name too, not one mistake per round trip
            check_username(name)
        except FieldError as exc:
            errors[exc.field] = exc.message
        raise FieldErrors(errors)
    try:
        with ctx.panel.database.session() as db:
            user = create_user(db, name, password, is_admin=is_admin)
            view = _view(db, user, {})
    except FieldError as exc:
        raise FieldErrors({exc.field: exc.message}) from None
    ctx.audit(
        "user.create",
        detail=f"user {view.username!r}" + (" (server admin)" if is_admin else ""),
    )
    return view, (password if made else None)


def update_user(ctx: Ctx, user_id: int, changes: Mapping[str, bool]) -> UserView:
    """Set `disabled` and/or `is_admin`; one transaction, one audit entry per change."""
    me = ctx.user
    done: list[str] = []
    with ctx.panel.database.session() as db:
        user = _user(db, user_id)
        name = user.username
        if "disabled" in changes and changes["disabled"] != user.disabled:
            if changes["disabled"]:
                _keep_an_admin(db, user, "disable")
                if user.id == me.user_id:
                    raise Refused("you cannot disable yourself")
                ctx.panel.auth.end_user_sessions(db, user.id)
                done.append("user.disable")
            else:
                done.append("user.enable")
            user.disabled = changes["disabled"]
        if "is_admin" in changes and changes["is_admin"] != user.is_admin:
            if not changes["is_admin"]:
                _keep_an_admin(db, user, "remove the admin right of")
            user.is_admin = changes["is_admin"]
            done.append("user.admin" if user.is_admin else "user.not_admin")
        view = _view(db, user, _tenant_names(db))
    ctx.panel.auth.invalidate_user(user_id)
    for action in done:
        ctx.audit(action, detail=f"user {name!r}")
    return view


def reset_password(ctx: Ctx, user_id: int, data: Mapping[str, Any]) -> str | None:
    """Set a user's password (generated when none is given); ends their sessions (but
    the admin's own current one). Returns the generated password."""
    password, made = _new_password(data)
    me = ctx.user
    with ctx.panel.database.session() as db:
        user = _user(db, user_id)
        name = user.username
        user.password_hash = hash_password(password)
        user.password_changed_at = time.time()
        if user.id == me.user_id and me.session_id is not None:
            db.execute(
                delete(Session).where(Session.user_id == user.id, Session.id != me.session_id)
            )
        else:
            ctx.panel.auth.end_user_sessions(db, user.id)
    ctx.panel.auth.invalidate_user(user_id)
    ctx.audit("user.password_reset", detail=f"user {name!r}, sessions ended")
    return password if made else None


def delete_user(ctx: Ctx, user_id: int) -> str:
    with ctx.panel.database.session() as db:
        user = _user(db, user_id)
        name = user.username
        _keep_an_admin(db, user, "delete")
        if user.id == ctx.user.user_id:
            raise Refused("you cannot delete yourself")
        ctx.panel.auth.end_user_sessions(db, user.id)
        db.delete(user)  # grants, sessions and tokens cascade
    ctx.panel.auth.invalidate_user(user_id)
    ctx.audit("user.delete", detail=f"user {name!r}")
    return name


def end_sessions_of(ctx: Ctx, user_id: int) -> None:
    with ctx.panel.database.session() as db:
        user = _user(db, user_id)
        name = user.username
        ctx.panel.auth.end_user_sessions(db, user.id)
    ctx.panel.auth.invalidate_user(user_id)
    ctx.audit("user.sessions_end", detail=f"user {name!r}")


def totp_off(ctx: Ctx, user_id: int) -> None:
    """For a user who lost their authenticator: codes off, they set them up again."""
    with ctx.panel.database.session() as db:
        user = _user(db, user_id)
        name = user.username
        user.totp_secret = None
        user.totp_last_step = None
    ctx.panel.auth.invalidate_user(user_id)
    ctx.audit("user.totp_off", detail=f"user {name!r}")


def set_user_grants(
    ctx: Ctx, user_id: int, wanted: Mapping[int, frozenset[str]]
) -> list[GrantChange]:
    with ctx.panel.database.session() as db:
        _user(db, user_id)
        known = set(_tenant_names(db))
        changes = apply_grants(
            db, {(user_id, tid): rights for tid, rights in wanted.items() if tid in known}
        )
    _after_grants(ctx, changes)
    return changes


def _user_action_failed(ctx: Ctx, action: str, user_id: int, exc: Exception) -> None:
    ctx.audit(action, "failed", detail=f"user id {user_id}: {exc}")


# --- user pages


def _users_page(
    ctx: Ctx,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    form: Mapping[str, Any] | None = None,
) -> Response:
    return ctx.render(
        "admin_users.html",
        status=status,
        users=list_users(ctx),
        errors=errors or {},
        form=form or {},
        flash=_flash(ctx),
    )


def _user_page(
    ctx: Ctx,
    user_id: int,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    flash: str = "",
    flash_kind: str = "ok",
    new_password: str | None = None,
) -> Response:
    with ctx.panel.database.session() as db:
        user = _view(db, _user(db, user_id), _tenant_names(db))
        tenants = [TenantRef.of(t) for t in db.scalars(select(Tenant).order_by(Tenant.name))]
        rights = rights_by_tenant(db, user_id)
    return ctx.render(
        "admin_user.html",
        status=status,
        user=user,
        tenants=tenants,
        held=rights,
        all_rights=RIGHTS,
        errors=errors or {},
        new_password=new_password,
        flash=flash or _flash(ctx),
        flash_kind=flash_kind,
        is_me=user.id == ctx.user.user_id,
    )


def _user_id(ctx: Ctx) -> int:
    return int(ctx.params["user_id"])


@registry.page("/admin/users", need=ADMIN)
def admin_users_page(ctx: Ctx) -> Response:
    """Every user, and a form to add one."""
    return _users_page(ctx)


@registry.page("/admin/users", need=ADMIN, methods=("POST",), name="users_create")
def users_create(ctx: Ctx) -> Response:
    """Add a user."""
    data = ctx.data()
    try:
        view, generated = create_user_action(ctx, data)
    except FieldErrors as exc:
        ctx.audit("user.create", "failed", detail=str(exc))
        return _users_page(ctx, status=422, errors=exc.errors, form=data)
    if generated:
        return _user_page(
            ctx, view.id, new_password=generated, flash=f"User {view.username} created."
        )
    return ctx.redirect(f"/admin/users/{view.id}?done=user-created")


@registry.page("/admin/users/{user_id:int}", need=ADMIN)
def admin_user_page(ctx: Ctx) -> Response:
    """One user: status, password, grants per tenant."""
    return _user_page(ctx, _user_id(ctx))


def _user_post(ctx: Ctx, action: str, done: str, run: Callable[[int], object]) -> Response:
    """Run one user action from a page form: redirect on success, the page with the
    reason on a refusal or bad input."""
    user_id = _user_id(ctx)
    try:
        result = run(user_id)
    except Refused as exc:
        _user_action_failed(ctx, action, user_id, exc)
        return _user_page(ctx, user_id, status=409, flash=str(exc), flash_kind="bad")
    except FieldErrors as exc:
        _user_action_failed(ctx, action, user_id, exc)
        return _user_page(ctx, user_id, status=422, errors=exc.errors)
    except HttpError as exc:
        _user_action_failed(ctx, action, user_id, exc)
        raise
    if isinstance(result, Response):
        return result
    return ctx.redirect(f"/admin/users/{user_id}?done={done}")


@registry.page("/admin/users/{user_id:int}/disable", need=ADMIN, methods=("POST",))
def user_disable(ctx: Ctx) -> Response:
    """Disable a user (they are logged out everywhere)."""
    return _user_post(
        ctx, "user.disable", "user-disabled", lambda uid: update_user(ctx, uid, {"disabled": True})
    )


@registry.page("/admin/users/{user_id:int}/enable", need=ADMIN, methods=("POST",))
def user_enable(ctx: Ctx) -> Response:
    """Let a disabled user log in again."""
    return _user_post(
        ctx, "user.enable", "user-enabled", lambda uid: update_user(ctx, uid, {"disabled": False})
    )


@registry.page("/admin/users/{user_id:int}/admin", need=ADMIN, methods=("POST",))
def user_admin(ctx: Ctx) -> Response:
    """Make a user a server admin, or not (field `is_admin`)."""
    try:
        value = boolean(ctx.data().get("is_admin", ""), "is_admin")
    except FieldError as exc:
        return _user_page(ctx, _user_id(ctx), status=422, errors={exc.field: exc.message})
    done = "user-admin" if value else "user-not-admin"
    return _user_post(
        ctx, "user.admin", done, lambda uid: update_user(ctx, uid, {"is_admin": value})
    )


@registry.page("/admin/users/{user_id:int}/password", need=ADMIN, methods=("POST",))
def user_password(ctx: Ctx) -> Response:
    """Give a user a new password (typed, or generated); ends their sessions."""
    data = ctx.data()

    def run(uid: int) -> Response:
        generated = reset_password(ctx, uid, data)
        message = "The password was changed and the user was logged out everywhere."
        return _user_page(ctx, uid, new_password=generated, flash=message)

    return _user_post(ctx, "user.password_reset", "", run)


@registry.page("/admin/users/{user_id:int}/sessions/end", need=ADMIN, methods=("POST",))
def user_sessions_end(ctx: Ctx) -> Response:
    """Log a user out everywhere."""
    return _user_post(
        ctx, "user.sessions_end", "user-sessions", lambda uid: end_sessions_of(ctx, uid)
    )


@registry.page("/admin/users/{user_id:int}/totp/disable", need=ADMIN, methods=("POST",))
def user_totp_off(ctx: Ctx) -> Response:
    """Turn a user's two-factor codes off (they lost their authenticator)."""
    return _user_post(ctx, "user.totp_off", "user-totp-off", lambda uid: totp_off(ctx, uid))


@registry.page("/admin/users/{user_id:int}/delete", need=ADMIN, methods=("POST",))
def user_delete(ctx: Ctx) -> Response:
    """Delete a user (not yourself, not the last admin)."""

    def run(uid: int) -> Response:
        delete_user(ctx, uid)
        return ctx.redirect("/admin/users?done=user-deleted")

    return _user_post(ctx, "user.delete", "", run)


@registry.page("/admin/users/{user_id:int}/grants", need=ADMIN, methods=("POST",))
def user_grants(ctx: Ctx) -> Response:
    """Save a user's grants on the tenants shown."""
    data = ctx.data()
    return _user_post(
        ctx,
        "grants.set",
        "grants",
        lambda uid: set_user_grants(ctx, uid, _matrix_from_form(data, "t-")),
    )


# --- user API

_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "is_admin": {"type": "boolean"},
        "disabled": {"type": "boolean"},
        "totp": {"type": "boolean"},
        "created_at": {"type": "number"},
        "password_changed_at": {"type": "number"},
        "sessions": {"type": "integer"},
        "grants": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
_GRANTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grants"],
    "properties": {
        "grants": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {"type": "string", "enum": list(RIGHTS)},
            },
        }
    },
}


def _api(
    ctx: Ctx, action: str, run: Callable[[], Response], *, tenant: str | None = None
) -> Response:
    """Run one admin action for the API: 422 with field errors, 409 for a refusal."""
    try:
        return run()
    except HttpError as exc:
        ctx.audit(action, "failed", tenant=tenant, detail=exc.message)
        raise
    except FieldErrors as exc:
        ctx.audit(action, "failed", tenant=tenant, detail=str(exc))
        return _invalid(exc)
    except HelperFailed as exc:
        ctx.audit(action, "failed", tenant=tenant, detail=str(exc))
        return JSONResponse({"error": str(exc)}, status_code=502)
    except (Refused, TenantError) as exc:
        ctx.audit(action, "failed", tenant=tenant, detail=str(exc))
        return _refused(str(exc))


@registry.api("/api/v1/users", need=ADMIN, name="api_users")
@describe(
    response={"type": "object", "properties": {"users": {"type": "array", "items": _USER_SCHEMA}}}
)
def api_users(ctx: Ctx) -> Response:
    """Every user, with their grants."""
    return JSONResponse({"users": [u.json() for u in list_users(ctx)]})


@registry.api("/api/v1/users", need=ADMIN, methods=("POST",), name="api_user_create")
@describe(
    body={
        "type": "object",
        "required": ["username"],
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "description": "Omitted: one is generated."},
            "is_admin": {"type": "boolean"},
        },
    },
    response={
        "type": "object",
        "properties": {
            "user": _USER_SCHEMA,
            "password": {"type": ["string", "null"], "description": "The generated one."},
        },
    },
)
def api_user_create(ctx: Ctx) -> Response:
    """Add a user."""

    def run() -> Response:
        view, generated = create_user_action(ctx, ctx.data())
        return JSONResponse({"user": view.json(), "password": generated}, status_code=201)

    return _api(ctx, "user.create", run)


@registry.api("/api/v1/users/{user_id:int}", need=ADMIN, name="api_user")
@describe(response=_USER_SCHEMA)
def api_user(ctx: Ctx) -> Response:
    """One user."""
    return JSONResponse(get_user(ctx, _user_id(ctx)).json())


@registry.api("/api/v1/users/{user_id:int}", need=ADMIN, methods=("PATCH",), name="api_user_update")
@describe(
    body={
        "type": "object",
        "properties": {"disabled": {"type": "boolean"}, "is_admin": {"type": "boolean"}},
    },
    response=_USER_SCHEMA,
)
def api_user_update(ctx: Ctx) -> Response:
    """Disable or enable a user, make them an admin or not.

    Disabling ends the user's sessions. Refused (409) for yourself (disable) and for
    the last enabled admin.
    """
    data = ctx.data()

    def run() -> Response:
        errors: dict[str, str] = {}
        changes: dict[str, bool] = {}
        for key, value in data.items():
            if key not in ("disabled", "is_admin"):
                errors[key] = "unknown field: only disabled and is_admin can be changed here"
                continue
            try:
                changes[key] = boolean(value, key)
            except FieldError as exc:
                errors[exc.field] = exc.message
        if errors:
            raise FieldErrors(errors)
        return JSONResponse(update_user(ctx, _user_id(ctx), changes).json())

    return _api(ctx, "user.update", run)


@registry.api(
    "/api/v1/users/{user_id:int}", need=ADMIN, methods=("DELETE",), name="api_user_delete"
)
def api_user_delete(ctx: Ctx) -> Response:
    """Delete a user (not yourself, not the last admin)."""
    return _api(
        ctx,
        "user.delete",
        lambda: JSONResponse({"deleted": delete_user(ctx, _user_id(ctx))}),
    )


@registry.api("/api/v1/users/{user_id:int}/password", need=ADMIN, methods=("POST",))
@describe(
    body={
        "type": "object",
        "properties": {"password": {"type": "string", "description": "Omitted: generated."}},
    },
    response={"type": "object", "properties": {"password": {"type": ["string", "null"]}}},
)
def api_user_password(ctx: Ctx) -> Response:
    """Give a user a new password (ends their sessions)."""
    return _api(
        ctx,
        "user.password_reset",
        lambda: JSONResponse({"password": reset_password(ctx, _user_id(ctx), ctx.data())}),
    )


@registry.api("/api/v1/users/{user_id:int}/sessions", need=ADMIN, methods=("DELETE",))
def api_user_sessions_end(ctx: Ctx) -> Response:
    """Log a user out everywhere."""

    def run() -> Response:
        end_sessions_of(ctx, _user_id(ctx))
        return JSONResponse({"ended": True})

    return _api(ctx, "user.sessions_end", run)


@registry.api("/api/v1/users/{user_id:int}/totp", need=ADMIN, methods=("DELETE",))
def api_user_totp_off(ctx: Ctx) -> Response:
    """Turn a user's two-factor codes off."""

    def run() -> Response:
        totp_off(ctx, _user_id(ctx))
        return JSONResponse({"totp": False})

    return _api(ctx, "user.totp_off", run)


@registry.api("/api/v1/users/{user_id:int}/grants", need=ADMIN, name="api_user_grants")
@describe(response=_GRANTS_SCHEMA)
def api_user_grants(ctx: Ctx) -> Response:
    """A user's rights, per tenant name."""
    return JSONResponse({"grants": get_user(ctx, _user_id(ctx)).grants})


def _user_grants_from_json(ctx: Ctx, *, replace: bool) -> Response:
    user_id = _user_id(ctx)
    by_name = _rights_from_json(ctx.data())
    with ctx.panel.database.session() as db:
        _user(db, user_id)
        ids = {name: tid for tid, name in _tenant_names(db).items()}
    unknown = {f"grants.{n}": "no such tenant" for n in by_name if n not in ids}
    if unknown:
        raise FieldErrors(unknown)
    wanted = {ids[name]: rights for name, rights in by_name.items()}
    if replace:
        wanted = {tid: wanted.get(tid, frozenset()) for tid in ids.values()}
    set_user_grants(ctx, user_id, wanted)
    return JSONResponse({"grants": get_user(ctx, user_id).grants})


@registry.api(
    "/api/v1/users/{user_id:int}/grants", need=ADMIN, methods=("PUT",), name="api_user_grants_put"
)
@describe(body=_GRANTS_SCHEMA, response=_GRANTS_SCHEMA)
def api_user_grants_put(ctx: Ctx) -> Response:
    """Replace all of a user's grants (tenants not named lose theirs).

    `control`, `logs` and `manage` imply `access`, which is stored with them.
    """
    return _api(ctx, "grants.set", lambda: _user_grants_from_json(ctx, replace=True))


@registry.api(
    "/api/v1/users/{user_id:int}/grants",
    need=ADMIN,
    methods=("PATCH",),
    name="api_user_grants_patch",
)
@describe(body=_GRANTS_SCHEMA, response=_GRANTS_SCHEMA)
def api_user_grants_patch(ctx: Ctx) -> Response:
    """Set a user's rights on the tenants named (an empty list removes them)."""
    return _api(ctx, "grants.set", lambda: _user_grants_from_json(ctx, replace=False))


# --- tenants


@dataclass(frozen=True)
class TenantView:
    ref: TenantRef
    created_at: float
    users: int
    up: bool
    apps: int | None
    message: str
    panel_made: bool

    def json(self) -> dict[str, Any]:
        return {
            "id": self.ref.id,
            "name": self.ref.name,
            "home": str(self.ref.home),
            "system_user": self.ref.system_user,
            "app_limit": self.ref.app_limit,
            "created_at": self.created_at,
            "users": self.users,
            "daemon": "up" if self.up else "down",
            "apps": self.apps,
            "daemon_message": self.message,
        }


def list_tenants(ctx: Ctx, *, only: int | None = None) -> list[TenantView]:
    with ctx.panel.database.session() as db:
        stmt = select(Tenant).order_by(Tenant.name)
        if only is not None:
            stmt = stmt.where(Tenant.id == only)
        rows = [(TenantRef.of(t), t.created_at) for t in db.scalars(stmt)]
        users = dict(
            db.execute(
                select(Grant.tenant_id, func.count(func.distinct(Grant.user_id))).group_by(
                    Grant.tenant_id
                )
            ).all()
        )
    refs = [ref for ref, _ in rows]
    states = daemon_states(refs) if only is None else {r.id: daemon_state(r) for r in refs}
    config = ctx.panel.config
    return [
        TenantView(
            ref,
            created,
            int(users.get(ref.id, 0)),
            states[ref.id].up,
            states[ref.id].apps,
            states[ref.id].message,
            panel_made(config, ref),
        )
        for ref, created in rows
    ]


def _tenant_view(ctx: Ctx, tenant_id: int) -> TenantView:
    found = list_tenants(ctx, only=tenant_id)
    if not found:
        raise HttpError(404, "no such tenant")
    return found[0]


def create_tenant_action(ctx: Ctx, data: Mapping[str, Any]) -> TenantRef:
    """Add a tenant (through the helper in isolated mode). FieldErrors or HelperFailed;
    the caller audits those."""
    limit = data.get("app_limit")
    ref = create_tenant(
        ctx.panel.database,
        ctx.panel.config,
        data.get("name", ""),
        data.get("home", ""),
        -1 if limit is None or limit == "" else limit,
        helper=ctx.panel.helper,
    )
    user = f", system user {ref.system_user}" if ref.system_user else ""
    ctx.audit(
        "tenant.create",
        tenant=ref.name,
        detail=f"home {ref.home}{user}, app limit {ref.app_limit}",
    )
    return ref


def set_limit_action(ctx: Ctx, tenant_id: int, data: Mapping[str, Any]) -> str:
    """Store the new limit and push it to the running daemon. Returns "" or, when the
    daemon did not take it, why (audited as failed; the stored limit stands)."""
    name = _tenant_name(ctx, tenant_id)
    try:
        old, new = set_app_limit(ctx.panel.database, tenant_id, data.get("app_limit", ""))
    except TenantError:
        raise HttpError(404, "no such tenant") from None
    with ctx.panel.database.session() as db:
        row = db.get(Tenant, tenant_id)
        ref = TenantRef.of(row) if row is not None else None
    try:
        pushed = push_app_limit(ref, new) if ref is not None else "the tenant was removed"
    except TenantError as exc:
        ctx.audit("tenant.limit", tenant=name, detail=f"app limit {new} (was {old})")
        ctx.audit("tenant.limit.push", "failed", tenant=name, detail=str(exc))
        return f"The app limit was saved, but {exc}."
    ctx.audit("tenant.limit", tenant=name, detail=f"app limit {new} (was {old}); {pushed}")
    return ""


def delete_tenant_action(ctx: Ctx, tenant_id: int, delete_files: bool) -> str:
    name = _tenant_name(ctx, tenant_id)
    try:
        removed = remove_tenant(ctx.panel, tenant_id, delete_files=delete_files)
    except TenantError as exc:
        ctx.audit("tenant.delete", "failed", tenant=name, detail=str(exc))
        raise
    files = "files deleted" if removed.files_deleted else f"files kept in {removed.home}"
    if removed.note:
        files += f" ({removed.note})"
    daemon = "daemon stopped" if removed.daemon_was_running else "daemon was not running"
    ctx.audit("tenant.delete", tenant=name, detail=f"{daemon}; {files}")
    return removed.note


def _tenant_name(ctx: Ctx, tenant_id: int) -> str:
    with ctx.panel.database.session() as db:
        row = db.get(Tenant, tenant_id)
        if row is None:
            raise HttpError(404, "no such tenant")
        return row.name


def set_tenant_grants(
    ctx: Ctx, tenant_id: int, wanted: Mapping[int, frozenset[str]]
) -> list[GrantChange]:
    with ctx.panel.database.session() as db:
        if db.get(Tenant, tenant_id) is None:
            raise HttpError(404, "no such tenant")
        known = set(db.scalars(select(User.id)))
        changes = apply_grants(
            db, {(uid, tenant_id): rights for uid, rights in wanted.items() if uid in known}
        )
    _after_grants(ctx, changes)
    return changes


def tenant_grants_by_name(ctx: Ctx, tenant_id: int) -> dict[str, list[str]]:
    with ctx.panel.database.session() as db:
        if db.get(Tenant, tenant_id) is None:
            raise HttpError(404, "no such tenant")
        names = {u.id: u.username for u in db.scalars(select(User))}
        return {
            names[uid]: _ordered(rights)
            for uid, rights in sorted(
                rights_by_user(db, tenant_id).items(), key=lambda item: names[item[0]]
            )
        }


# --- tenant pages


@dataclass(frozen=True)
class PanelMode:
    """What the tenants page says about how tenants are kept apart."""

    isolated: bool
    helper: str = ""
    """Isolated mode: the helper's state, in words."""
    helper_ok: bool = False
    tenants_dir: str = ""
    """Where the homes of new tenants go."""


def panel_mode(panel: Panel) -> PanelMode:
    if panel.helper is None:
        return PanelMode(False, tenants_dir=str(panel.config.tenants_dir))
    try:
        info = HelperClient(panel.helper.path, timeout=STATUS_TIMEOUT).ping()
    except HelperError as exc:
        return PanelMode(True, exc.message)
    return PanelMode(
        True,
        f"corral helper {info['version']} answers at {panel.helper.path}",
        True,
        info["tenants_dir"],
    )


def _tenants_page(
    ctx: Ctx,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    form: Mapping[str, Any] | None = None,
    flash: str = "",
    flash_kind: str = "ok",
) -> Response:
    return ctx.render(
        "admin_tenants.html",
        status=status,
        tenants=list_tenants(ctx),
        errors=errors or {},
        form=form or {},
        tenants_dir=ctx.panel.config.tenants_dir,
        mode=panel_mode(ctx.panel),
        flash=flash or _flash(ctx),
        flash_kind=flash_kind,
    )


def _tenant_page(
    ctx: Ctx,
    tenant_id: int,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    form: Mapping[str, Any] | None = None,
    flash: str = "",
    flash_kind: str = "ok",
) -> Response:
    view = _tenant_view(ctx, tenant_id)
    with ctx.panel.database.session() as db:
        users = [
            (u.id, u.username, u.is_admin, u.disabled)
            for u in db.scalars(select(User).order_by(User.username))
        ]
        rights = rights_by_user(db, tenant_id)
    return ctx.render(
        "admin_tenant.html",
        status=status,
        t=view,
        users=users,
        held=rights,
        all_rights=RIGHTS,
        errors=errors or {},
        form=form or {},
        flash=flash or _flash(ctx),
        flash_kind=flash_kind,
    )


def _tenant_id(ctx: Ctx) -> int:
    return int(ctx.params["tenant_id"])


@registry.page("/admin/tenants", need=ADMIN)
def admin_tenants_page(ctx: Ctx) -> Response:
    """Every tenant with its daemon's state, and a form to add one."""
    return _tenants_page(ctx)


@registry.page("/admin/tenants", need=ADMIN, methods=("POST",), name="tenants_create")
def tenants_create(ctx: Ctx) -> Response:
    """Add a tenant."""
    data = ctx.data()
    try:
        ref = create_tenant_action(ctx, data)
    except FieldErrors as exc:
        ctx.audit("tenant.create", "failed", detail=str(exc))
        return _tenants_page(ctx, status=422, errors=exc.errors, form=data)
    except HelperFailed as exc:
        ctx.audit("tenant.create", "failed", detail=str(exc))
        return _tenants_page(
            ctx, status=502, form=data, flash=f"The tenant was not created: {exc}", flash_kind="bad"
        )
    return ctx.redirect(f"/admin/tenants/{ref.id}?done=tenant-created")


@registry.page("/admin/tenants/{tenant_id:int}", need=ADMIN)
def admin_tenant_page(ctx: Ctx) -> Response:
    """One tenant: its daemon, app limit and who may do what."""
    return _tenant_page(ctx, _tenant_id(ctx))


@registry.page("/admin/tenants/{tenant_id:int}/limit", need=ADMIN, methods=("POST",))
def tenant_limit(ctx: Ctx) -> Response:
    """Change a tenant's app limit."""
    tenant_id = _tenant_id(ctx)
    data = ctx.data()
    try:
        problem = set_limit_action(ctx, tenant_id, data)
    except FieldErrors as exc:
        ctx.audit("tenant.limit", "failed", tenant=_tenant_name(ctx, tenant_id), detail=str(exc))
        return _tenant_page(ctx, tenant_id, status=422, errors=exc.errors, form=data)
    if problem:
        return _tenant_page(ctx, tenant_id, flash=problem, flash_kind="bad")
    return ctx.redirect(f"/admin/tenants/{tenant_id}?done=tenant-limit")


@registry.page("/admin/tenants/{tenant_id:int}/grants", need=ADMIN, methods=("POST",))
def tenant_grants(ctx: Ctx) -> Response:
    """Save who may do what on a tenant."""
    tenant_id = _tenant_id(ctx)
    data = ctx.data()
    try:
        wanted = _matrix_from_form(data, "u-")
    except FieldError as exc:
        return _tenant_page(ctx, tenant_id, status=422, flash=exc.message, flash_kind="bad")
    set_tenant_grants(ctx, tenant_id, wanted)
    return ctx.redirect(f"/admin/tenants/{tenant_id}?done=grants#grants")


@registry.page("/admin/tenants/{tenant_id:int}/delete", need=ADMIN, methods=("POST",))
def tenant_delete(ctx: Ctx) -> Response:
    """Remove a tenant: stop its daemon, delete its grants and samples."""
    tenant_id = _tenant_id(ctx)
    data = ctx.data()
    try:
        delete_files = boolean(data.get("delete_files", ""), "delete_files")
        note = delete_tenant_action(ctx, tenant_id, delete_files)
    except FieldError as exc:
        return _tenant_page(ctx, tenant_id, status=422, errors={exc.field: exc.message})
    except TenantError as exc:
        status = 502 if isinstance(exc, HelperFailed) else 409
        return _tenant_page(ctx, tenant_id, status=status, flash=str(exc), flash_kind="bad")
    if note:
        return _tenants_page(ctx, flash=f"The tenant was removed, but {note}.", flash_kind="bad")
    return ctx.redirect("/admin/tenants?done=tenant-deleted")


# --- tenant API

_TENANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "home": {"type": "string"},
        "app_limit": {"type": "integer", "description": "-1 unlimited, 0 none."},
        "created_at": {"type": "number"},
        "users": {"type": "integer", "description": "Users holding a grant here."},
        "daemon": {"type": "string", "enum": ["up", "down"]},
        "apps": {"type": ["integer", "null"], "description": "null: the daemon did not say."},
        "daemon_message": {"type": "string"},
        "system_user": {
            "type": ["string", "null"],
            "description": "The tenant's own system user (isolated mode); null in dev mode.",
        },
    },
}
_TENANT_UPDATED: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_TENANT_SCHEMA["properties"],
        "warning": {
            "type": "string",
            "description": "Only when the new limit was saved but the running daemon did not "
            "take it (it gets it at its next start).",
        },
    },
}


@registry.api("/api/v1/admin/tenants", need=ADMIN, name="api_admin_tenants")
@describe(
    response={
        "type": "object",
        "properties": {"tenants": {"type": "array", "items": _TENANT_SCHEMA}},
    }
)
def api_admin_tenants(ctx: Ctx) -> Response:
    """Every tenant, with its daemon's state and number of apps."""
    return JSONResponse({"tenants": [t.json() for t in list_tenants(ctx)]})


@registry.api(
    "/api/v1/admin/tenants", need=ADMIN, methods=("POST",), name="api_admin_tenant_create"
)
@describe(
    body={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "home": {
                "type": "string",
                "description": "An existing absolute directory; omitted: one is made "
                "under the panel's tenants folder. Refused in isolated mode: the helper "
                "makes the home of the tenant's new system user.",
            },
            "app_limit": {"type": "integer", "description": "-1 unlimited (default), 0 none."},
        },
    },
    response=_TENANT_SCHEMA,
)
def api_admin_tenant_create(ctx: Ctx) -> Response:
    """Add a tenant."""

    def run() -> Response:
        ref = create_tenant_action(ctx, ctx.data())
        return JSONResponse(_tenant_view(ctx, ref.id).json(), status_code=201)

    return _api(ctx, "tenant.create", run)


@registry.api("/api/v1/admin/tenants/{tenant_id:int}", need=ADMIN, name="api_admin_tenant")
@describe(response=_TENANT_SCHEMA)
def api_admin_tenant(ctx: Ctx) -> Response:
    """One tenant."""
    return JSONResponse(_tenant_view(ctx, _tenant_id(ctx)).json())


@registry.api(
    "/api/v1/admin/tenants/{tenant_id:int}",
    need=ADMIN,
    methods=("PATCH",),
    name="api_admin_tenant_update",
)
@describe(
    body={"type": "object", "properties": {"app_limit": {"type": "integer"}}},
    response=_TENANT_UPDATED,
)
def api_admin_tenant_update(ctx: Ctx) -> Response:
    """Change a tenant's app limit (-1 unlimited, 0 none)."""
    data = ctx.data()
    tenant_id = _tenant_id(ctx)
    name = _tenant_name(ctx, tenant_id)

    def run() -> Response:
        unknown = {k: "unknown field: only app_limit can be changed" for k in data}
        unknown.pop("app_limit", None)
        if unknown:
            raise FieldErrors(unknown)
        problem = set_limit_action(ctx, tenant_id, data) if "app_limit" in data else ""
        body = _tenant_view(ctx, tenant_id).json()
        if problem:
            body["warning"] = problem
        return JSONResponse(body)

    return _api(ctx, "tenant.limit", run, tenant=name)


@registry.api(
    "/api/v1/admin/tenants/{tenant_id:int}",
    need=ADMIN,
    methods=("DELETE",),
    name="api_admin_tenant_delete",
)
@describe(
    query=(
        QueryParam(
            "delete_files",
            {"type": "boolean"},
            "Also delete the tenant's home (only one the panel made). Default: keep it.",
        ),
    ),
)
def api_admin_tenant_delete(ctx: Ctx) -> Response:
    """Remove a tenant: its daemon is stopped, its grants and samples deleted."""
    tenant_id = _tenant_id(ctx)
    try:
        delete_files = boolean(ctx.request.query_params.get("delete_files", ""), "delete_files")
    except FieldError as exc:
        return _invalid(FieldErrors({exc.field: exc.message}))
    name = _tenant_name(ctx, tenant_id)
    try:
        note = delete_tenant_action(ctx, tenant_id, delete_files)
    except HelperFailed as exc:
        return JSONResponse({"error": str(exc)}, status_code=502)
    except TenantError as exc:
        return _refused(str(exc))
    return JSONResponse({"deleted": name, "note": note})


@registry.api(
    "/api/v1/admin/tenants/{tenant_id:int}/grants", need=ADMIN, name="api_admin_tenant_grants"
)
@describe(response=_GRANTS_SCHEMA)
def api_admin_tenant_grants(ctx: Ctx) -> Response:
    """Who holds which rights on a tenant, per user name."""
    return JSONResponse({"grants": tenant_grants_by_name(ctx, _tenant_id(ctx))})


def _tenant_grants_from_json(ctx: Ctx, *, replace: bool) -> Response:
    tenant_id = _tenant_id(ctx)
    _tenant_name(ctx, tenant_id)
    by_name = _rights_from_json(ctx.data())
    with ctx.panel.database.session() as db:
        ids = {u.username: u.id for u in db.scalars(select(User))}
    unknown = {f"grants.{n}": "no such user" for n in by_name if n not in ids}
    if unknown:
        raise FieldErrors(unknown)
    wanted = {ids[name]: rights for name, rights in by_name.items()}
    if replace:
        wanted = {uid: wanted.get(uid, frozenset()) for uid in ids.values()}
    set_tenant_grants(ctx, tenant_id, wanted)
    return JSONResponse({"grants": tenant_grants_by_name(ctx, tenant_id)})


@registry.api(
    "/api/v1/admin/tenants/{tenant_id:int}/grants",
    need=ADMIN,
    methods=("PUT",),
    name="api_admin_tenant_grants_put",
)
@describe(body=_GRANTS_SCHEMA, response=_GRANTS_SCHEMA)
def api_admin_tenant_grants_put(ctx: Ctx) -> Response:
    """Replace who may do what on a tenant (users not named lose their rights here)."""
    return _api(ctx, "grants.set", lambda: _tenant_grants_from_json(ctx, replace=True))


@registry.api(
    "/api/v1/admin/tenants/{tenant_id:int}/grants",
    need=ADMIN,
    methods=("PATCH",),
    name="api_admin_tenant_grants_patch",
)
@describe(body=_GRANTS_SCHEMA, response=_GRANTS_SCHEMA)
def api_admin_tenant_grants_patch(ctx: Ctx) -> Response:
    """Set the rights of the users named on a tenant (an empty list removes them)."""
    return _api(ctx, "grants.set", lambda: _tenant_grants_from_json(ctx, replace=False))


# --- settings


def settings_values(ctx: Ctx) -> dict[str, Any]:
    with ctx.panel.database.session() as db:
        return {key: get_setting(db, key) for key in SETTINGS}


def save_settings(ctx: Ctx, data: Mapping[str, Any]) -> list[str]:
    """Check every submitted setting, then store them all or none; the keys changed."""
    errors = {k: "no such setting" for k in data if k not in SETTINGS and k != "csrf_token"}
    changed: list[str] = []
    try:
        if errors:
            raise FieldErrors(errors)
        with ctx.panel.database.session() as db:
            for key, spec in SETTINGS.items():
                if key not in data:
                    continue
                value = data[key]
                text = value
                if isinstance(value, int | float) and not isinstance(value, bool):
                    text = str(value)  # seconds
                if not isinstance(text, str):
                    errors[key] = "expected text such as 7d or 3600"
                    continue
                before = get_setting(db, key)
                try:
                    after = set_setting(db, key, text)
                except SettingError as exc:
                    errors[key] = exc.message
                    continue
                if after != before:
                    changed.append(f"{key}: {spec.show(after)} (was {spec.show(before)})")
            if errors:
                raise FieldErrors(errors)  # rolls back what was set before the mistake
    except FieldErrors as exc:
        ctx.audit("settings.set", "failed", detail=str(exc))
        raise
    if changed:
        ctx.audit("settings.set", detail="; ".join(changed))
    return changed


def _settings_page(
    ctx: Ctx,
    *,
    status: int = 200,
    errors: Mapping[str, str] | None = None,
    form: Mapping[str, Any] | None = None,
) -> Response:
    values = settings_values(ctx)
    shown = {key: spec.show(values[key]) for key, spec in SETTINGS.items()}
    defaults = {key: spec.show(spec.default) for key, spec in SETTINGS.items()}
    return ctx.render(
        "admin_settings.html",
        status=status,
        settings=SETTINGS,
        shown={**shown, **{k: v for k, v in (form or {}).items() if k in SETTINGS}},
        defaults=defaults,
        errors=errors or {},
        flash=_flash(ctx),
    )


@registry.page("/admin/settings", need=ADMIN)
def admin_settings_page(ctx: Ctx) -> Response:
    """The panel's settings."""
    return _settings_page(ctx)


@registry.page("/admin/settings", need=ADMIN, methods=("POST",), name="settings_save")
def settings_save(ctx: Ctx) -> Response:
    """Save the panel's settings (all or none)."""
    data = ctx.data()
    try:
        save_settings(ctx, data)
    except FieldErrors as exc:
        return _settings_page(ctx, status=422, errors=exc.errors, form=data)
    return ctx.redirect("/admin/settings?done=settings")


def _settings_json(ctx: Ctx) -> dict[str, Any]:
    values = settings_values(ctx)
    return {
        "settings": {
            key: {
                "value": values[key],
                "shown": spec.show(values[key]),
                "default": spec.default,
                "label": spec.label,
            }
            for key, spec in SETTINGS.items()
        }
    }


_SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "settings": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "value": {"description": "The stored value (seconds for durations)."},
                    "shown": {"type": "string"},
                    "default": {},
                    "label": {"type": "string"},
                },
            },
        }
    },
}


@registry.api("/api/v1/settings", need=ADMIN, name="api_settings")
@describe(response=_SETTINGS_SCHEMA)
def api_settings(ctx: Ctx) -> Response:
    """The panel's settings."""
    return JSONResponse(_settings_json(ctx))


@registry.api("/api/v1/settings", need=ADMIN, methods=("PATCH",), name="api_settings_update")
@describe(
    body={
        "type": "object",
        "description": "Setting key -> new value, as text (`7d`, `1h`) or seconds.",
        "additionalProperties": {"type": ["string", "number"]},
    },
    response=_SETTINGS_SCHEMA,
)
def api_settings_update(ctx: Ctx) -> Response:
    """Change settings: all are checked, then all saved or none."""
    try:
        save_settings(ctx, ctx.data())
    except FieldErrors as exc:
        return _invalid(exc)
    return JSONResponse(_settings_json(ctx))
