"""The audit log: hub administrators see every entry; a bucket's owners see their
bucket's entries only (the query is bound to its public id)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from corral.hub import views
from corral.hub.roles import HUB_ADMIN, OWNER
from corral.hub.routing import Ctx, registry


@registry.page("/audit", need=HUB_ADMIN)
def audit_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        entries = views.audit_entries(db, None)
    return ctx.render("audit.html", entries=entries, scope="the whole hub")


@registry.api("/api/audit", need=HUB_ADMIN)
def audit_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse({"entries": views.audit_entries(db, None)})


@registry.page("/b/{bucket}/audit", need=OWNER)
def bucket_audit_page(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        entries = views.audit_entries(db, ctx.the_bucket.public_id)
    return ctx.render("audit.html", entries=entries, scope=f"bucket {ctx.the_bucket.name}")


@registry.api("/api/b/{bucket}/audit", need=OWNER)
def bucket_audit_api(ctx: Ctx) -> Response:
    with ctx.hub.database.session() as db:
        return JSONResponse({"entries": views.audit_entries(db, ctx.the_bucket.public_id)})
