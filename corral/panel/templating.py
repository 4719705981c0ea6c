"""Server-rendered pages: Jinja2 with autoescaping, and the values every page needs."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from corral import __version__

if TYPE_CHECKING:
    from corral.panel.routing import Ctx

TEMPLATES = Path(__file__).with_name("templates")


def format_when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_duration(seconds: float | None) -> str:
    """Uptime as PM2 shows it: 42s, 5m, 3h 12m, 2d 4h."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def make_environment(directory: Path) -> Environment:
    """Jinja2 as the panel and the hub use it: autoescaping always on, their filters."""
    env = Environment(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_when
    env.filters["bytes"] = format_bytes
    env.filters["duration"] = format_duration
    env.globals["version"] = __version__
    return env


class Templates:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = make_environment(directory)

    def render(self, ctx: Ctx, name: str, *, status: int = 200, **context: Any) -> Response:
        panel = ctx.panel
        principal = ctx.principal
        nav_tenants = []
        if principal is not None:
            ids = None if principal.is_admin else list(principal.rights)
            nav_tenants = panel.tenants_for(ids)
        values = {
            "request": ctx.request,
            "me": principal,
            "csrf_token": principal.csrf_token if principal else "",
            "tenant": ctx.tenant,
            "rights": principal.rights_on(ctx.tenant.id)
            if principal and ctx.tenant
            else frozenset(),
            "nav_tenants": nav_tenants,
            "isolated": panel.config.isolated,
            **context,
        }
        html = self.env.get_template(name).render(values)
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, status: int, message: str) -> Response:
        html = self.env.get_template("error.html").render(
            request=request,
            status=status,
            message=message,
            me=None,
            nav_tenants=[],
            csrf_token="",
            tenant=None,
            rights=frozenset(),
        )
        return HTMLResponse(html, status_code=status)
