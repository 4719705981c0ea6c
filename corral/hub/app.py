"""`create_app`: the hub's ASGI application."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy import update
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from corral.hub.agents import agent_endpoint
from corral.hub.config import HubConfig
from corral.hub.db.engine import Database, open_database
from corral.hub.db.models import Server
from corral.hub.sealing import Sealer, load_or_create_key
from corral.hub.services import Hub
from corral.hub.templating import Templates
from corral.panel.security.headers import SecurityHeadersMiddleware

STATIC = Path(__file__).with_name("static")
AGENT_PATH = "/agent/v1"
ROUTE_MODULES = (
    "corral.hub.routes.auth",
    "corral.hub.routes.account",
    "corral.hub.routes.audit",
    "corral.hub.routes.buckets",
    "corral.hub.routes.live",
)

BackgroundTask = Callable[[Hub], contextlib.AbstractAsyncContextManager[None]]


def _web_routes(hub: Hub) -> list[BaseRoute]:
    try:
        from corral.hub.routing import registry
    except ModuleNotFoundError:
        return []
    for module in ROUTE_MODULES:
        importlib.import_module(module)
    return registry.routes(hub)


def create_app(
    config: HubConfig,
    *,
    database: Database | None = None,
    background: tuple[BackgroundTask, ...] | None = None,
) -> Starlette:
    """The hub app. `background`: tasks for the app's life (default: pruning and alerts)."""
    sealer = Sealer(load_or_create_key(config.key_path))
    hub = Hub(config, database or open_database(config.url), sealer, Templates())
    forget_connections(hub.database)
    if background is None:
        background = _default_background()

    async def agents(websocket: WebSocket) -> None:
        await agent_endpoint(hub, websocket)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for task in background:
                await stack.enter_async_context(task(hub))
            yield

    app = Starlette(
        routes=[
            WebSocketRoute(AGENT_PATH, agents, name="agent"),
            *_web_routes(hub),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeadersMiddleware, tls=config.tls),
            Middleware(TrustedHostMiddleware, allowed_hosts=config.hosts()),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


def forget_connections(database: Database) -> None:
    """A new hub process holds no agent connection yet, whatever an earlier one (perhaps
    killed) left in the table; agents reconnect on their own."""
    with database.session() as db:
        db.execute(update(Server).where(Server.connected.is_(True)).values(connected=False))


def _default_background() -> tuple[BackgroundTask, ...]:
    try:
        from corral.hub.background import default_tasks
    except ModuleNotFoundError:
        return ()
    return default_tasks()
