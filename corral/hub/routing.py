"""The hub's route table: every page, API call and stream declares its `Need` here, in
one list a test can walk (`registry.specs`).

Before an endpoint runs (in the threadpool), the wrapper authenticates the session
cookie, resolves `{bucket}` (a public id) to a bucket the user is a member of (404
otherwise, exactly as for a bucket that does not exist), applies the role (403), and
on state changes checks Origin and the CSRF token and reads the body within its limit.
Modelled on corral/panel/routing.py, whose wrapper is bound to the panel's tenants and
rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from corral.hub import auth
from corral.hub.audit import record
from corral.hub.buckets import find_bucket
from corral.hub.roles import PUBLIC, Decision, Need, Principal, Role, decide
from corral.hub.services import Hub
from corral.panel.body import BodyTooLarge, read_body
from corral.panel.security.origin import origin_allowed, websocket_origin_allowed
from corral.panel.security.tokens import tokens_equal

Kind = Literal["page", "api", "ws"]
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
WS_RECHECK_SECONDS = 5.0


class HttpError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class BucketRef:
    id: int
    public_id: str
    name: str
    role: Role


@dataclass(frozen=True)
class RouteSpec:
    path: str
    methods: tuple[str, ...]
    need: Need
    kind: Kind
    name: str
    endpoint: Callable[..., Any]

    @property
    def changes_state(self) -> bool:
        return any(m not in SAFE_METHODS for m in self.methods)


@dataclass
class Ctx:
    request: Request
    hub: Hub
    principal: Principal | None
    bucket: BucketRef | None
    spec: RouteSpec
    form: FormData | None = None
    json: Any = None
    cookies_out: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def params(self) -> Mapping[str, str]:
        return self.request.path_params

    @property
    def address(self) -> str:
        return self.request.client.host if self.request.client else ""

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise HttpError(401, "log in first")
        return self.principal

    @property
    def the_bucket(self) -> BucketRef:
        if self.bucket is None:
            raise HttpError(404)
        return self.bucket

    def data(self) -> Mapping[str, Any]:
        if self.json is not None:
            if not isinstance(self.json, dict):
                raise HttpError(422, "the request body must be a JSON object")
            return self.json
        if self.form is not None:
            return {k: v for k, v in self.form.items() if isinstance(v, str)}
        return {}

    def text(self, name: str) -> str:
        value = self.data().get(name, "")
        if not isinstance(value, str):
            raise HttpError(422, f"{name}: must be a string")
        return value

    def audit(self, action: str, result: str = "ok", detail: str = "") -> None:
        with self.hub.database.session() as db:
            record(
                db,
                self.principal.username if self.principal else "anonymous",
                action,
                result,
                bucket=self.bucket.public_id if self.bucket else None,
                detail=detail,
                address=self.address,
            )

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        values = {
            "me": self.principal,
            "csrf_token": self.principal.csrf_token if self.principal else "",
            "bucket": self.bucket,
            "role": self.bucket.role if self.bucket else None,
            "Role": Role,
            **context,
        }
        return self.hub.templates.html(template, status, **values)

    @property
    def is_api(self) -> bool:
        return self.spec.kind == "api"


@dataclass
class WsCtx:
    websocket: WebSocket
    hub: Hub
    principal: Principal
    bucket: BucketRef | None
    spec: RouteSpec
    token: str

    async def still_allowed(self) -> bool:
        principal = await run_in_threadpool(
            auth.from_session, self.hub.database, self.hub.config, self.token
        )
        if principal is None:
            return False
        bucket_id = self.bucket.id if self.bucket else None
        return decide(self.spec.need, principal, bucket_id) is Decision.ALLOW


Endpoint = Callable[[Ctx], Response]
WsEndpoint = Callable[[WsCtx], Awaitable[None]]


class Registry:
    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []

    def _add(
        self, path: str, methods: tuple[str, ...], need: Need, kind: Kind, name: str | None
    ) -> Callable[[Any], Any]:
        def decorate(endpoint: Any) -> Any:
            if ("{bucket}" in path) != (need.role is not None):
                raise ValueError(f"{path}: bucket routes, and only they, need a role")
            self.specs.append(
                RouteSpec(path, methods, need, kind, name or endpoint.__name__, endpoint)
            )
            return endpoint

        return decorate

    def page(
        self, path: str, *, need: Need, methods: tuple[str, ...] = ("GET",), name: str = ""
    ) -> Callable[[Endpoint], Endpoint]:
        return self._add(path, methods, need, "page", name or None)

    def api(
        self, path: str, *, need: Need, methods: tuple[str, ...] = ("GET",), name: str = ""
    ) -> Callable[[Endpoint], Endpoint]:
        if not path.startswith("/api/"):
            raise ValueError(f"{path}: API routes live under /api/")
        return self._add(path, methods, need, "api", name or None)

    def websocket(self, path: str, *, need: Need) -> Callable[[WsEndpoint], WsEndpoint]:
        return self._add(path, ("GET",), need, "ws", None)

    def routes(self, hub: Hub) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for spec in self.specs:
            if spec.kind == "ws":
                out.append(WebSocketRoute(spec.path, _ws_handler(hub, spec), name=spec.name))
            else:
                handler = _http_handler(hub, spec)
                out.append(Route(spec.path, handler, methods=list(spec.methods), name=spec.name))
        return out


registry = Registry()


def _principal(hub: Hub, cookies: Mapping[str, str]) -> tuple[Principal | None, str | None]:
    token = cookies.get(hub.cookie_name)
    if not token:
        return None, None
    return auth.from_session(hub.database, hub.config, token), token


def _bucket(hub: Hub, public_id: str, principal: Principal | None) -> BucketRef | None:
    """The bucket if this user is a member of it; None otherwise (no matter why)."""
    if principal is None:
        return None
    with hub.database.session() as db:
        bucket = find_bucket(db, public_id)
    if bucket is None or bucket.id not in principal.roles:
        return None
    return BucketRef(bucket.id, bucket.public_id, bucket.name, principal.roles[bucket.id])


def _lookup(
    hub: Hub, cookies: Mapping[str, str], public_id: str | None
) -> tuple[Principal | None, str | None, BucketRef | None]:
    principal, token = _principal(hub, cookies)
    bucket = _bucket(hub, public_id, principal) if public_id is not None else None
    return principal, token, bucket


REASONS = {
    400: "bad request",
    401: "log in first",
    403: "your role in this bucket does not allow this",
    404: "not found",
    413: "the request body is too large",
    409: "conflict with the current state",
    415: "unsupported content type",
    422: "invalid input",
    429: "too many attempts: wait a little",
}


def problem(hub: Hub, spec: RouteSpec, request: Request, status: int, message: str) -> Response:
    text = message or REASONS.get(status, "error")
    if spec.kind == "api" or request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"error": text}, status_code=status)
    return hub.templates.html(
        "error.html", status, status=status, message=text, me=None, bucket=None, csrf_token=""
    )


async def _read_body(request: Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        raise HttpError(413) from None


async def _parse_body(ctx: Ctx, limit: int) -> None:
    request = ctx.request
    body = await _read_body(request, limit)
    request._body = body  # request.form() re-reads the cached body
    if not body:
        return
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            ctx.json = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
    elif content_type == "application/x-www-form-urlencoded":
        ctx.form = await request.form(max_files=0, max_fields=1000)
    else:
        raise HttpError(415, f"unsupported content type {content_type or '(none)'}")


def _csrf_ok(ctx: Ctx) -> bool:
    expected = ctx.principal.csrf_token if ctx.principal else None
    if not expected:
        return False
    given = ctx.request.headers.get(CSRF_HEADER)
    if given is None:
        value = ctx.data().get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and tokens_equal(given, expected)


def _http_handler(hub: Hub, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await _handle(hub, spec, request)
        except HttpError as exc:
            return problem(hub, spec, request, exc.status, exc.message)

    return handle


async def _handle(hub: Hub, spec: RouteSpec, request: Request) -> Response:
    public_id = request.path_params.get("bucket")
    principal, _, bucket = await run_in_threadpool(_lookup, hub, request.cookies, public_id)
    decision = decide(spec.need, principal, bucket.id if bucket else None)
    ctx = Ctx(request, hub, principal, bucket, spec)
    if decision is Decision.LOGIN:
        if spec.kind == "page" and request.method == "GET":
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        raise HttpError(401)
    if decision is Decision.HIDDEN:
        if spec.changes_state:
            detail = f"{request.method} {request.url.path}: not a member"
            await run_in_threadpool(ctx.audit, spec.name, "denied", detail)
        raise HttpError(404)
    if request.method not in SAFE_METHODS:
        await _parse_body(ctx, hub.config.max_body_bytes)
        # Cookies are ambient authority: state changes must come from the hub's own pages.
        if not origin_allowed(request.headers, hub.origin_of(request)):
            await run_in_threadpool(ctx.audit, f"csrf:{spec.name}", "denied", "bad Origin")
            raise HttpError(403, "the request did not come from the hub's own pages (Origin)")
        if spec.need != PUBLIC and not _csrf_ok(ctx):
            await run_in_threadpool(ctx.audit, f"csrf:{spec.name}", "denied", "bad CSRF token")
            raise HttpError(403, "the form has expired or its CSRF token is wrong; reload")
    if decision is Decision.FORBIDDEN:
        if spec.changes_state:
            await run_in_threadpool(ctx.audit, spec.name, "denied", f"needs {spec.need}")
        raise HttpError(403)
    response: Response = await run_in_threadpool(spec.endpoint, ctx)
    return response


def _ws_handler(hub: Hub, spec: RouteSpec) -> Callable[[WebSocket], Awaitable[None]]:
    async def handle(websocket: WebSocket) -> None:
        if not websocket_origin_allowed(websocket.headers, hub.origin_of(websocket)):
            await websocket.close(code=4403)
            return
        public_id = websocket.path_params.get("bucket")
        principal, token, bucket = await run_in_threadpool(
            _lookup, hub, websocket.cookies, public_id
        )
        decision = decide(spec.need, principal, bucket.id if bucket else None)
        if decision is not Decision.ALLOW or principal is None or token is None:
            code = {Decision.LOGIN: 4401, Decision.FORBIDDEN: 4403}.get(decision, 4404)
            await websocket.close(code=code)
            return
        await websocket.accept()
        await _run_guarded(WsCtx(websocket, hub, principal, bucket, spec, token))

    return handle


async def _run_guarded(ctx: WsCtx) -> None:
    """Run the stream; close it (4401) as soon as its session or role is gone."""
    stream = asyncio.ensure_future(ctx.spec.endpoint(ctx))

    async def guard() -> None:
        while await ctx.still_allowed():
            await asyncio.sleep(WS_RECHECK_SECONDS)

    watcher = asyncio.ensure_future(guard())
    try:
        done, _ = await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stream, watcher):
            task.cancel()
        await asyncio.gather(stream, watcher, return_exceptions=True)
    if ctx.websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ctx.websocket.close(code=4401 if watcher in done else 1000)
