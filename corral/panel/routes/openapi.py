"""GET /api/openapi.json: the API's own description (SPEC 2.7)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from corral import __version__
from corral.panel.openapi import build_document, describe
from corral.panel.permissions import USER
from corral.panel.routing import Ctx, registry


# USER, not PUBLIC: the document holds nothing secret, but nobody can call a listed
# operation without logging in or holding an API token, and either suffices to read it.
# Keeping it behind authentication leaves anonymous visitors only the login form.
@registry.api("/api/openapi.json", need=USER, name="openapi")
@describe(response={"type": "object", "description": "An OpenAPI 3.1 document."})
def openapi(ctx: Ctx) -> Response:
    """The OpenAPI 3.1 description of this API.

    Generated from the panel's route table, so it lists every API operation with the
    permission it needs (`x-corral-permission`).
    """
    document = build_document(
        registry.specs,
        version=__version__,
        cookie_name=ctx.panel.cookie_name,
        server_url=ctx.panel.origin_of(ctx.request),
    )
    return JSONResponse(document, headers={"Cache-Control": "no-store"})
