"""Shared helpers for panel tests: a panel app on a temp database, users, tenants, grants,
logging in through the real login form, and stopping tenants' daemons afterwards."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.panel.app import create_app
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import Grant, Tenant
from corral.panel.services import Panel, TenantRef
from corral.panel.users import create_user

ORIGIN = "http://testserver"
PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def short_dir(prefix: str = "cp") -> Path:
    """A short /tmp directory: tenant daemons' unix socket paths must stay < 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_app(home: Path, database_url: str = "", **config: object) -> tuple[Starlette, Panel]:
    cfg = PanelConfig(home=home, database_url=database_url, **config)  # type: ignore[arg-type]
    app = create_app(cfg, database=Database.open(cfg.url), background=())
    return app, app.state.panel


def add_user(panel: Panel, name: str, *, admin: bool = False, password: str = PASSWORD) -> int:
    with panel.database.session() as db:
        return create_user(db, name, password, is_admin=admin).id


def add_tenant(panel: Panel, name: str, home: Path, app_limit: int = -1) -> TenantRef:
    home.mkdir(parents=True, exist_ok=True)
    with panel.database.session() as db:
        row = Tenant(name=name, home=str(home), app_limit=app_limit, created_at=time.time())
        db.add(row)
        db.flush()
        return TenantRef.of(row)


def grant(panel: Panel, user_id: int, tenant: TenantRef, rights: Iterable[str]) -> None:
    with panel.database.session() as db:
        for right in rights:
            db.add(Grant(user_id=user_id, tenant_id=tenant.id, right=right))
    panel.auth.invalidate_user(user_id)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through GET+POST /login; returns the session's CSRF token (from a page)."""
    page = client.get("/login")
    token = _TOKEN.search(page.text)
    assert token, "the login form has no csrf_token field"
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token.group(1)},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    page = client.get("/account")
    if page.status_code != 200:
        page = client.get("/")
    match = _META.search(page.text)
    assert match and match.group(1), "no CSRF token in the page"
    return match.group(1)


def stop_daemons(homes: Iterable[Path]) -> None:
    """Stop every tenant daemon a test started (by its socket; never by pid)."""
    from corral.paths import Home
    from corral.protocol.client import ControlClient

    for home in homes:
        socket_path = Home(home / ".corral").socket
        if not socket_path.exists():
            continue
        try:
            with ControlClient.connect(socket_path, timeout=5) as client:
                client.call("kill")
        except OSError:
            pass
