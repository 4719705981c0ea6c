"""Bucket list, bucket and server pages, remote actions, actions log, members, settings.

Each page has a JSON twin under /api/; a POST endpoint serves both (JSON in, JSON out
for the API; a form and a redirect for the page).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from starlette.responses import JSONResponse, RedirectResponse, Response

from corral.hub import views
from corral.hub.accounts import AccountError, check_username, find_user, set_role
from corral.hub.actions import ActionError, parse_args, request_action
from corral.hub.alerts import AlertError, add_rule, check_webhook_url, remove_rule
from corral.hub.buckets import check_name, create_bucket
from corral.hub.db.models import (
    AppSample,
    Bucket,
    Membership,
    ServerSample,
    User,
)
from corral.hub.roles import ADMIN, DEVELOPER, HUB_ADMIN, OWNER, USER, VIEWER, Role
from corral.hub.routing import Ctx, HttpError, registry
from corral.panel.security.passwords import generate_password, hash_password
from corral.protocol.hub import Verb


def _done(ctx: Ctx, url: str, payload: dict[str, Any] | None = None) -> Response:
    if ctx.is_api:
        return JSONResponse(payload or {"ok": True})
    return RedirectResponse(url, status_code=303)


def _base(ctx: Ctx) -> str:
    return f"/b/{ctx.the_bucket.public_id}"


def _server_or_404(ctx: Ctx) -> tuple[int, str]:
    with ctx.hub.database.session() as db:
        server = views.find_server(db, ctx.the_bucket.id, ctx.params["server"])
        if server is None:
            raise HttpError(404, "no such server in this bucket")
        return server.id, server.hostname


# --- bucket list


@registry.page("/", need=USER)
def home(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        buckets = views.bucket_list(db, ctx.user)
    return ctx.render("home.html", buckets=buckets)


@registry.api("/api/buckets", need=USER)
def home_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse({"buckets": views.bucket_list(db, ctx.user)})


@registry.page("/buckets", need=HUB_ADMIN, methods=("POST",), name="bucket_create")
@registry.api("/api/buckets", need=HUB_ADMIN, methods=("POST",), name="bucket_create_api")
def bucket_create(ctx: Ctx) -> Response:
    hub = ctx.hub
    try:
        with hub.database.session() as db:
            user = db.get(User, ctx.user.user_id)
            assert user is not None
            made = create_bucket(db, hub.sealer, ctx.text("name"), user, hub.config.retention_days)
    except AccountError as exc:
        raise HttpError(422, str(exc)) from None
    ctx.audit("bucket.create", detail=f"{made.name} {made.public_id}")
    payload = {"public_id": made.public_id, "name": made.name, "secret": made.secret}
    if ctx.is_api:
        return JSONResponse(payload, status_code=201)
    # The secret is shown in this one answer only (no-store, never stored).
    return ctx.render("bucket_created.html", made=payload)


# --- bucket and servers


@registry.page("/b/{bucket}", need=VIEWER)
def bucket_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        servers = views.servers(db, ctx.the_bucket.id)
    return ctx.render("bucket.html", servers=servers)


@registry.api("/api/b/{bucket}", need=VIEWER)
def bucket_api(ctx: Ctx) -> Response:
    bucket = ctx.the_bucket
    with ctx.hub.database.session() as db:
        servers = views.servers(db, bucket.id)
    return JSONResponse(
        {"public_id": bucket.public_id, "name": bucket.name, "role": bucket.role.label,
         "servers": servers}
    )  # fmt: skip


@registry.page("/b/{bucket}/servers/{server}", need=VIEWER)
def server_page(ctx: Ctx) -> Response:
    server_pk, _ = _server_or_404(ctx)
    with ctx.hub.database.session() as db:
        server = views.find_server(db, ctx.the_bucket.id, str(server_pk))
        assert server is not None
        detail = views.server_detail(db, server)
    return ctx.render("server.html", server=detail, verbs=list(Verb), error="")


@registry.api("/api/b/{bucket}/servers/{server}", need=VIEWER)
def server_api(ctx: Ctx) -> Response:
    server_pk, _ = _server_or_404(ctx)
    with ctx.hub.database.session() as db:
        server = views.find_server(db, ctx.the_bucket.id, str(server_pk))
        assert server is not None
        return JSONResponse(views.server_detail(db, server))


@registry.page("/b/{bucket}/servers/{server}/actions", need=DEVELOPER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/servers/{server}/actions",
    need=DEVELOPER,
    methods=("POST",),
    name="server_action_api",
)
def server_action(ctx: Ctx) -> Response:
    server_pk, hostname = _server_or_404(ctx)
    data = {k: v for k, v in ctx.data().items() if isinstance(v, str)}
    verb = data.get("verb", "")
    target = data.get("target", "").strip()
    password = data.pop("password", "") or None
    try:
        args = parse_args(Verb(verb), data) if verb in set(Verb) else {}
        sent = request_action(
            ctx.hub, ctx.the_bucket.id, server_pk, verb, target, args, ctx.user.username, password
        )
    except ActionError as exc:
        ctx.audit("action", "refused", f"{verb[:16]} {target[:80]} on {hostname}: {exc}")
        raise HttpError(422, str(exc)) from None
    finally:
        password = None
        data.clear()
    ctx.audit("action", "sent", f"{sent.id} {sent.verb} {sent.target} on {hostname}")
    return _done(ctx, f"{_base(ctx)}/actions", {"id": sent.id, "state": "sent"})


@registry.page("/b/{bucket}/servers/{server}/samples/delete", need=DEVELOPER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/servers/{server}/samples/delete",
    need=DEVELOPER,
    methods=("POST",),
    name="server_samples_delete_api",
)
def server_samples_delete(ctx: Ctx) -> Response:
    server_pk, hostname = _server_or_404(ctx)
    with ctx.hub.database.session() as db:
        db.execute(delete(ServerSample).where(ServerSample.server_id == server_pk))
        db.execute(delete(AppSample).where(AppSample.server_id == server_pk))
    ctx.audit("samples.delete", detail=hostname)
    return _done(ctx, f"{_base(ctx)}/servers/{server_pk}")


@registry.page("/b/{bucket}/servers/{server}/delete", need=ADMIN, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/servers/{server}/delete",
    need=ADMIN,
    methods=("POST",),
    name="server_delete_api",
)
def server_delete(ctx: Ctx) -> Response:
    server_pk, hostname = _server_or_404(ctx)
    # A linked agent would add the server back on its next reconnect: unlink it first.
    if ctx.hub.links.get(ctx.the_bucket.id, server_pk) is not None:
        raise HttpError(
            409,
            f"{hostname} is still linked to this hub: run `corral unlink` on it first, "
            "then remove it here (a linked server would come back on its next reconnect)",
        )
    with ctx.hub.database.session() as db:
        from corral.hub.db.models import Server

        db.execute(
            delete(Server).where(Server.id == server_pk, Server.bucket_id == ctx.the_bucket.id)
        )
    ctx.hub.links.drop(ctx.the_bucket.id, server_pk)
    ctx.audit("server.delete", detail=hostname)
    return _done(ctx, _base(ctx))


# --- actions log


@registry.page("/b/{bucket}/actions", need=VIEWER)
def actions_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        rows = views.actions(db, ctx.the_bucket.id)
    return ctx.render("actions.html", actions=rows)


@registry.api("/api/b/{bucket}/actions", need=VIEWER)
def actions_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse({"actions": views.actions(db, ctx.the_bucket.id)})


# --- alerts


@registry.page("/b/{bucket}/alerts", need=VIEWER)
def alerts_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        data = views.alerts(db, ctx.the_bucket.id)
    return ctx.render("alerts.html", **data)


@registry.api("/api/b/{bucket}/alerts", need=VIEWER)
def alerts_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse(views.alerts(db, ctx.the_bucket.id))


@registry.page("/b/{bucket}/alerts/rules", need=DEVELOPER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/alerts/rules", need=DEVELOPER, methods=("POST",), name="alert_add_api"
)
def alert_add(ctx: Ctx) -> Response:
    data = ctx.data()
    try:
        with ctx.hub.database.session() as db:
            rule_id = add_rule(
                db,
                ctx.the_bucket.id,
                str(data.get("kind", "")),
                str(data.get("threshold", "")),
                str(data.get("window", "") or "300"),
            )
    except AlertError as exc:
        raise HttpError(422, str(exc)) from None
    ctx.audit("alert.rule.add", detail=f"{data.get('kind')} {data.get('threshold')}")
    return _done(ctx, f"{_base(ctx)}/alerts", {"id": rule_id})


@registry.page("/b/{bucket}/alerts/rules/{rule}/delete", need=DEVELOPER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/alerts/rules/{rule}/delete",
    need=DEVELOPER,
    methods=("POST",),
    name="alert_delete_api",
)
def alert_delete(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        if not remove_rule(db, ctx.the_bucket.id, ctx.params["rule"]):
            raise HttpError(404, "no such alert rule in this bucket")
    ctx.audit("alert.rule.delete", detail=ctx.params["rule"])
    return _done(ctx, f"{_base(ctx)}/alerts")


# --- members


@registry.page("/b/{bucket}/members", need=VIEWER)
def members_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        rows = views.members(db, ctx.the_bucket.id)
    return ctx.render("members.html", members=rows, roles=list(Role), created=None)


@registry.api("/api/b/{bucket}/members", need=VIEWER)
def members_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse({"members": views.members(db, ctx.the_bucket.id)})


def _role(ctx: Ctx, text: str) -> Role:
    try:
        return Role.parse(text)
    except ValueError as exc:
        raise HttpError(422, f"role: {exc}") from None


@registry.page("/b/{bucket}/members", need=ADMIN, methods=("POST",), name="member_add")
@registry.api("/api/b/{bucket}/members", need=ADMIN, methods=("POST",), name="member_add_api")
def member_add(ctx: Ctx) -> Response:
    """Add a user (made with a generated password, shown once, when new)."""
    bucket = ctx.the_bucket
    name = ctx.text("username").strip()
    role = _role(ctx, ctx.text("role") or "viewer")
    if role > bucket.role:
        raise HttpError(403, f"an {bucket.role.label} cannot give the {role.label} role")
    password = None
    try:
        check_username(name)
        with ctx.hub.database.session() as db:
            user = find_user(db, name)
            if user is None:
                import time

                password = generate_password()
                user = User(
                    username=name,
                    password_hash=hash_password(password),
                    is_admin=False,
                    disabled=False,
                    created_at=time.time(),
                )
                db.add(user)
                db.flush()
            elif db.get(Membership, (user.id, bucket.id)) is not None:
                raise AccountError(f"{name} is already a member (the owner changes roles)")
            set_role(db, user.id, bucket.id, role)
    except AccountError as exc:
        raise HttpError(422, str(exc)) from None
    ctx.audit("member.add", detail=f"{name} as {role.label}{' (new user)' if password else ''}")
    created = {"username": name, "password": password} if password else None
    if ctx.is_api:
        return JSONResponse({"username": name, "role": role.label, "password": password})
    if created is None:
        return RedirectResponse(f"{_base(ctx)}/members", status_code=303)
    with ctx.hub.database.session() as db:
        rows = views.members(db, bucket.id)
    return ctx.render("members.html", members=rows, roles=list(Role), created=created)


def _member(ctx: Ctx) -> tuple[int, str]:
    text = ctx.params["user"]
    with ctx.hub.database.session() as db:
        user = find_user(db, text)
        if user is None or db.get(Membership, (user.id, ctx.the_bucket.id)) is None:
            raise HttpError(404, "no such member of this bucket")
        return user.id, user.username


@registry.page("/b/{bucket}/members/{user}/role", need=OWNER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/members/{user}/role", need=OWNER, methods=("POST",), name="member_role_api"
)
def member_role(ctx: Ctx) -> Response:
    user_id, name = _member(ctx)
    role = _role(ctx, ctx.text("role"))
    with ctx.hub.database.session() as db:
        row = db.get(Membership, (user_id, ctx.the_bucket.id))
        assert row is not None
        demoted = row.role == Role.OWNER.label and role is not Role.OWNER
        if demoted and views.owners(db, ctx.the_bucket.id) <= 1:
            raise HttpError(422, "a bucket keeps at least one owner")
        row.role = role.label
    ctx.audit("member.role", detail=f"{name} -> {role.label}")
    return _done(ctx, f"{_base(ctx)}/members")


@registry.page("/b/{bucket}/members/{user}/remove", need=OWNER, methods=("POST",))
@registry.api(
    "/api/b/{bucket}/members/{user}/remove",
    need=OWNER,
    methods=("POST",),
    name="member_remove_api",
)
def member_remove(ctx: Ctx) -> Response:
    user_id, name = _member(ctx)
    with ctx.hub.database.session() as db:
        row = db.get(Membership, (user_id, ctx.the_bucket.id))
        assert row is not None
        if row.role == Role.OWNER.label and views.owners(db, ctx.the_bucket.id) <= 1:
            raise HttpError(422, "a bucket keeps at least one owner")
        db.delete(row)
    ctx.audit("member.remove", detail=name)
    return _done(ctx, f"{_base(ctx)}/members")


# --- settings


@registry.page("/b/{bucket}/settings", need=OWNER)
def settings_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        bucket = db.get(Bucket, ctx.the_bucket.id)
        assert bucket is not None
        values = {
            "name": bucket.name,
            "webhook_url": bucket.webhook_url or "",
            "retention_days": bucket.retention_days,
        }
    return ctx.render("settings.html", values=values)


@registry.page("/b/{bucket}/settings", need=OWNER, methods=("POST",), name="settings_save")
@registry.api("/api/b/{bucket}/settings", need=OWNER, methods=("POST",), name="settings_save_api")
def settings_save(ctx: Ctx) -> Response:
    try:
        name = check_name(ctx.text("name"))
        webhook = check_webhook_url(ctx.text("webhook_url").strip())
        retention = float(ctx.text("retention_days") or "7")
    except (AccountError, AlertError) as exc:
        raise HttpError(422, str(exc)) from None
    except ValueError:
        raise HttpError(422, "retention_days: a number of days") from None
    if not 0.01 <= retention <= 3650:
        raise HttpError(422, "retention_days: from 0.01 to 3650")
    with ctx.hub.database.session() as db:
        bucket = db.get(Bucket, ctx.the_bucket.id)
        assert bucket is not None
        bucket.name, bucket.webhook_url, bucket.retention_days = name, webhook, retention
    ctx.audit("bucket.settings", detail=f"name {name!r}, retention {retention} days")
    return _done(ctx, f"{_base(ctx)}/settings")


@registry.page("/b/{bucket}/delete", need=OWNER, methods=("POST",))
@registry.api("/api/b/{bucket}/delete", need=OWNER, methods=("POST",), name="bucket_delete_api")
def bucket_delete(ctx: Ctx) -> Response:
    bucket = ctx.the_bucket
    if ctx.text("confirm") != bucket.name:
        raise HttpError(422, "confirm: type the bucket's name to delete it")
    with ctx.hub.database.session() as db:
        db.execute(delete(Bucket).where(Bucket.id == bucket.id))
    ctx.hub.links.drop(bucket.id)
    ctx.audit("bucket.delete", detail=f"{bucket.name} {bucket.public_id}")
    return _done(ctx, "/")
