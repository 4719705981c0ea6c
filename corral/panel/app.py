"""`create_app`: the panel's ASGI application, assembled from its parts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.routing import registry
from corral.panel.security.headers import SecurityHeadersMiddleware
from corral.panel.services import Panel
from corral.panel.templating import Templates
from corral.panel.webhooks.endpoint import hook_routes

if TYPE_CHECKING:
    from corral.panel.gateway import DaemonStarter

STATIC = Path(__file__).with_name("static")

# Importing a routes module registers its routes on `registry`; this list is the panel.
ROUTE_MODULES = (
    "corral.panel.routes.auth",
    "corral.panel.routes.tenants",
    "corral.panel.routes.apps",
    "corral.panel.routes.env",
    "corral.panel.routes.logs",
    "corral.panel.routes.deploys",
    "corral.panel.routes.admin",
    "corral.panel.routes.account",
    "corral.panel.routes.audit",
    "corral.panel.routes.metrics",
    "corral.panel.routes.openapi",
    "corral.panel.routes.hooks",
)

BackgroundTask = Callable[[Panel], contextlib.AbstractAsyncContextManager[None]]


def load_routes() -> None:
    import importlib

    for module in ROUTE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a module that exists but fails to import: a bug
                raise


def create_app(
    config: PanelConfig,
    *,
    database: Database | None = None,
    starter: DaemonStarter | None = None,
    background: tuple[BackgroundTask, ...] | None = None,
) -> Starlette:
    """The panel app. `background`: tasks run for the app's life (default: the sampler)."""
    load_routes()
    db = database or Database.open(config.url)
    panel = Panel(config, db, Templates(), starter)
    if background is None:
        background = _default_background()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for task in background:
                await stack.enter_async_context(task(panel))
            yield

    app = Starlette(
        routes=[
            *registry.routes(panel),
            *hook_routes(panel),  # public, session-less: outside the table's wrapper
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeadersMiddleware, tls=config.tls),
            Middleware(TrustedHostMiddleware, allowed_hosts=config.hosts()),
        ],
        lifespan=lifespan,
    )
    app.state.panel = panel
    return app


def _default_background() -> tuple[BackgroundTask, ...]:
    try:
        from corral.panel.sampler import run_sampler
    except ModuleNotFoundError:
        return ()
    return (run_sampler,)
