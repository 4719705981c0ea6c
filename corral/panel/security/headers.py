"""Security headers on every HTTP response (SPEC 2.4), as a pure ASGI middleware.

A header the application already set is left alone, so that one route can deliberately
differ (a download's own Cache-Control, say); everything else gets the strict default.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script or style anywhere; 'self' in connect-src also allows WebSockets to the
# panel's own host and port (ws: for http, wss: for https; CSP Level 3, Chromium 80+).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=()"
HSTS = "max-age=31536000"
STATIC_PREFIX = "/static/"

_ALWAYS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app = app
        extra = [("Strict-Transport-Security", HSTS)] if tls else []
        self.headers: tuple[tuple[str, str], ...] = (*_ALWAYS, *extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Pages and API answers may hold a tenant's data: never kept by any cache.
        no_store = not str(scope.get("path", "")).startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers.setdefault(name, value)
                if no_store:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
