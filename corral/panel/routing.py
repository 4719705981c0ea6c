"""The route table: every page, API call and WebSocket declares the permission it needs
here, in one place a test can enumerate (`Registry.specs`).

Each HTTP endpoint is a plain function `(ctx: Ctx) -> Response`, run in Starlette's
threadpool (database and daemon calls block). Before it runs, the wrapper:
authenticates (session cookie or bearer API token), resolves the `{tenant}` in the path,
applies the route's `Need` (404 for an unseen tenant, 403 for a missing right), checks
CSRF token and Origin on every state-changing request, and reads the body within the
size limit. Endpoints therefore only ever see allowed, well-formed requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from corral.panel.body import BodyTooLarge, read_body
from corral.panel.permissions import PUBLIC, Decision, Need, Principal, decide
from corral.panel.security.origin import origin_allowed, websocket_origin_allowed
from corral.panel.security.tokens import tokens_equal

if TYPE_CHECKING:
    from corral.panel.services import Panel, TenantRef

Kind = Literal["page", "api", "ws"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
WS_RECHECK_SECONDS = 5.0
"""A stream re-checks its session and rights this often (SPEC 2.4: at least every 10 s)."""
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


class HttpError(Exception):
    """Stop the request with this status; `message` is shown to the user."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(what: str = "not found") -> HttpError:
    return HttpError(404, what)


@dataclass(frozen=True)
class RouteSpec:
    path: str
    methods: tuple[str, ...]
    need: Need
    kind: Kind
    name: str
    summary: str
    endpoint: Callable[..., Any]

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    @property
    def changes_state(self) -> bool:
        return any(m not in SAFE_METHODS for m in self.methods)


@dataclass
class Ctx:
    """What an endpoint gets: the request, the panel's services, who asks, on which tenant."""

    request: Request
    panel: Panel
    principal: Principal | None
    tenant: TenantRef | None
    spec: RouteSpec
    form: FormData | None = None
    json: Any = None
    via_token: bool = False
    headers_out: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> Mapping[str, str]:
        return self.request.path_params

    @property
    def address(self) -> str:
        client = self.request.client
        return client.host if client else ""

    @property
    def user(self) -> Principal:
        if self.principal is None:  # routes with Level.USER or above always have one
            raise HttpError(401, "log in first")
        return self.principal

    def data(self) -> Mapping[str, Any]:
        """The submitted fields: a JSON object for the API, the form for pages."""
        if self.json is not None:
            if not isinstance(self.json, dict):
                raise HttpError(422, "the request body must be a JSON object")
            return self.json
        if self.form is not None:
            return {k: v for k, v in self.form.items() if isinstance(v, str)}
        return {}

    def audit(
        self,
        action: str,
        result: str = "ok",
        *,
        app: str | None = None,
        detail: str = "",
        tenant: str | None = None,
    ) -> None:
        who = self.principal
        self.panel.audit.record(
            actor=who.username if who else "anonymous",
            user_id=who.user_id if who else None,
            address=self.address,
            tenant=tenant if tenant is not None else (self.tenant.name if self.tenant else None),
            app=app,
            action=action,
            result=result,
            detail=detail,
        )

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return self.panel.templates.render(self, template, status=status, **context)

    def redirect(self, url: str) -> Response:
        return RedirectResponse(url, status_code=303)


@dataclass
class WsCtx:
    websocket: WebSocket
    panel: Panel
    principal: Principal
    tenant: TenantRef | None
    spec: RouteSpec
    token: str
    via_token: bool

    async def still_allowed(self) -> bool:
        """Re-authenticate (the session may have ended) and re-apply the route's need."""
        principal = await run_in_threadpool(
            _authenticate_token, self.panel, self.token, self.via_token
        )
        if principal is None:
            return False
        self.principal = principal
        tenant_id = self.tenant.id if self.tenant else None
        return decide(self.spec.need, principal, tenant_id) is Decision.ALLOW


Endpoint = Callable[[Ctx], Response]
WsEndpoint = Callable[[WsCtx], Awaitable[None]]


class Registry:
    """Collects routes; `routes(panel)` turns them into Starlette routes with the checks."""

    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []

    def _add(
        self,
        path: str,
        methods: tuple[str, ...],
        need: Need,
        kind: Kind,
        name: str | None,
        summary: str,
    ) -> Callable[[Any], Any]:
        def decorate(endpoint: Any) -> Any:
            if "{tenant}" not in path and need.level.value == "tenant":
                raise ValueError(f"{path}: a tenant route needs a {{tenant}} parameter")
            doc = (endpoint.__doc__ or "").strip().splitlines()
            self.specs.append(
                RouteSpec(
                    path,
                    methods,
                    need,
                    kind,
                    name or endpoint.__name__,
                    summary or (doc[0] if doc else ""),
                    endpoint,
                )
            )
            return endpoint

        return decorate

    def page(
        self,
        path: str,
        *,
        need: Need,
        methods: tuple[str, ...] = ("GET",),
        name: str | None = None,
        summary: str = "",
    ) -> Callable[[Endpoint], Endpoint]:
        return self._add(path, methods, need, "page", name, summary)

    def api(
        self,
        path: str,
        *,
        need: Need,
        methods: tuple[str, ...] = ("GET",),
        name: str | None = None,
        summary: str = "",
    ) -> Callable[[Endpoint], Endpoint]:
        if not path.startswith("/api/"):
            raise ValueError(f"{path}: API routes live under /api/")
        return self._add(path, methods, need, "api", name, summary)

    def websocket(
        self, path: str, *, need: Need, name: str | None = None, summary: str = ""
    ) -> Callable[[WsEndpoint], WsEndpoint]:
        return self._add(path, ("GET",), need, "ws", name, summary)

    def routes(self, panel: Panel) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for spec in self.specs:
            if spec.kind == "ws":
                out.append(WebSocketRoute(spec.path, _ws_handler(panel, spec), name=spec.name))
            else:
                out.append(
                    Route(
                        spec.path,
                        _http_handler(panel, spec),
                        methods=list(spec.methods),
                        name=spec.name,
                    )
                )
        return out


registry = Registry()
"""The panel's one route table; the modules in corral/panel/routes/ register on it."""


# --- authentication


def _bearer(request_headers: Mapping[str, str]) -> str | None:
    value = request_headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate_token(panel: Panel, token: str, via_token: bool) -> Principal | None:
    if via_token:
        return panel.auth.from_api_token(token)
    return panel.auth.from_session(token)


def credentials(
    panel: Panel, headers: Mapping[str, str], cookies: Mapping[str, str]
) -> tuple[str, bool] | None:
    """(token, is_api_token) from an Authorization header or the session cookie."""
    bearer = _bearer(headers)
    if bearer is not None:
        return bearer, True
    cookie = cookies.get(panel.cookie_name)
    return (cookie, False) if cookie else None


# --- HTTP


def _problem(
    spec: RouteSpec, request: Request, status: int, message: str, panel: Panel
) -> Response:
    if spec.kind == "api" or request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"error": message or _REASONS.get(status, "error")}, status_code=status)
    return panel.templates.error_page(request, status, message or _REASONS.get(status, "error"))


_REASONS = {
    400: "bad request",
    401: "log in first",
    403: "you do not have the right to do this",
    404: "not found",
    405: "method not allowed",
    413: "the request body is too large",
    415: "unsupported content type",
    422: "invalid input",
    429: "too many requests",
    502: "the tenant's daemon answered with an error",
    503: "the tenant's daemon cannot be reached",
}


async def _read_body(request: Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        raise HttpError(413) from None


async def _parse_body(ctx: Ctx, limit: int) -> None:
    request = ctx.request
    body = await _read_body(request, limit)
    request._body = body  # Starlette re-reads the cached body in request.form()
    if not body:
        return
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            ctx.json = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        ctx.form = await request.form(max_files=4, max_fields=1000, max_part_size=limit)
    else:
        raise HttpError(415, f"unsupported content type {content_type or '(none)'}")


def _csrf_ok(ctx: Ctx) -> bool:
    expected = ctx.principal.csrf_token if ctx.principal else None
    if not expected:
        return False
    given = ctx.request.headers.get(CSRF_HEADER)
    if given is None and ctx.form is not None:
        value = ctx.form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if given is None and isinstance(ctx.json, dict):
        value = ctx.json.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and tokens_equal(given, expected)


def _http_handler(panel: Panel, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await _handle(panel, spec, request)
        except HttpError as exc:
            return _problem(spec, request, exc.status, exc.message, panel)

    return handle


async def _handle(panel: Panel, spec: RouteSpec, request: Request) -> Response:
    creds = credentials(panel, request.headers, request.cookies)
    principal = None
    if creds is not None:
        principal = await run_in_threadpool(_authenticate_token, panel, *creds)
        if principal is None and creds[1]:
            raise HttpError(401, "the API token is unknown, revoked or expired")
    via_token = bool(creds and creds[1])
    tenant = None
    if "tenant" in request.path_params:
        tenant = await run_in_threadpool(panel.find_tenant, request.path_params["tenant"])
    decision = decide(spec.need, principal, tenant.id if tenant else None)
    if decision is Decision.LOGIN:
        if spec.kind == "page" and request.method == "GET":
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        raise HttpError(401)
    ctx = Ctx(request, panel, principal, tenant, spec, via_token=via_token)
    if decision is Decision.HIDDEN:
        detail = f"not found for this user: {request.method} {request.url.path}"
        raise await _refused(ctx, 404, detail)
    if request.method not in SAFE_METHODS:
        await _parse_body(ctx, panel.config.max_body_bytes)
        if not via_token:
            # Cookies are ambient authority: a state change needs the page's CSRF token
            # and must come from the panel's own origin. (Public routes such as login
            # check their own pre-session token.)
            if not origin_allowed(request.headers, panel.origin_of(request)):
                await run_in_threadpool(
                    ctx.audit, f"csrf:{spec.name}", "denied", detail="bad or missing Origin"
                )
                raise HttpError(403, "the request did not come from the panel's own pages (Origin)")
            if principal is not None and spec.need != PUBLIC and not _csrf_ok(ctx):
                await run_in_threadpool(
                    ctx.audit, f"csrf:{spec.name}", "denied", detail="bad or missing CSRF token"
                )
                raise HttpError(
                    403, "the form has expired or its CSRF token is wrong; reload the page"
                )
    if decision is Decision.FORBIDDEN:
        raise await _refused(ctx, 403, f"missing the {spec.need} right")
    response: Response = await run_in_threadpool(_call, spec, ctx)
    for key, value in ctx.headers_out.items():
        response.headers[key] = value
    return response


async def _refused(ctx: Ctx, status: int, detail: str) -> HttpError:
    """The error to raise; a refused state change is audited first (SPEC 2.6: who tried
    what, even on a tenant they cannot see)."""
    if ctx.spec.changes_state:
        params = ctx.request.path_params
        await run_in_threadpool(
            ctx.audit, ctx.spec.name, "denied",
            tenant=params.get("tenant"), app=params.get("app"), detail=detail,
        )  # fmt: skip
    return HttpError(status)


def _call(spec: RouteSpec, ctx: Ctx) -> Response:
    from corral.panel.gateway import GatewayError, NotFound

    try:
        result: Response = spec.endpoint(ctx)
        return result
    except NotFound as exc:
        raise HttpError(404, str(exc)) from None
    except GatewayError as exc:
        status = 503 if type(exc).__name__ == "DaemonDown" else 502
        raise HttpError(status, str(exc)) from None


# --- WebSocket


def _ws_handler(panel: Panel, spec: RouteSpec) -> Callable[[WebSocket], Awaitable[None]]:
    async def handle(websocket: WebSocket) -> None:
        # Refusals happen before accept(): the browser sees a failed handshake (403).
        if not websocket_origin_allowed(websocket.headers, panel.origin_of(websocket)):
            await websocket.close(code=4403, reason="origin refused")
            return
        creds = credentials(panel, websocket.headers, websocket.cookies)
        principal = None
        if creds is not None:
            principal = await run_in_threadpool(_authenticate_token, panel, *creds)
        tenant = None
        if "tenant" in websocket.path_params:
            tenant = await run_in_threadpool(panel.find_tenant, websocket.path_params["tenant"])
        decision = decide(spec.need, principal, tenant.id if tenant else None)
        if decision is not Decision.ALLOW or principal is None or creds is None:
            code = {Decision.LOGIN: 4401, Decision.FORBIDDEN: 4403}.get(decision, 4404)
            await websocket.close(code=code)
            return
        await websocket.accept()
        ctx = WsCtx(websocket, panel, principal, tenant, spec, creds[0], creds[1])
        await _run_guarded(ctx)

    return handle


async def _run_guarded(ctx: WsCtx) -> None:
    """Run the stream; close it (4401) as soon as its session or rights are gone."""
    stream = asyncio.ensure_future(ctx.spec.endpoint(ctx))

    async def guard() -> None:
        while True:
            await asyncio.sleep(WS_RECHECK_SECONDS)
            if not await ctx.still_allowed():
                return

    watcher = asyncio.ensure_future(guard())
    try:
        done, _ = await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled (server shutdown): no stray tasks
        for task in (stream, watcher):
            if not task.done():
                task.cancel()
        await asyncio.gather(stream, watcher, return_exceptions=True)
    # The browser may already be gone (the stream ended because it left): closing a
    # closed socket raises, and there is nothing left to tell it.
    if ctx.websocket.client_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        if watcher in done and ctx.websocket.application_state is WebSocketState.CONNECTED:
            await ctx.websocket.close(code=4401, reason="session ended or rights removed")
        elif ctx.websocket.application_state is WebSocketState.CONNECTED:
            await ctx.websocket.close()
