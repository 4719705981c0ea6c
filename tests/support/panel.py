"""Shared helpers for panel tests: a panel app on a temp database, users, tenants, grants,
sessions and API tokens, logging in through the real login form, tenants' daemons, a real
uvicorn server, and stopping tenants' daemons afterwards."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.panel.app import create_app
from corral.panel.config import PanelConfig
from corral.panel.db.engine import Database
from corral.panel.db.models import ApiToken, AuditEntry, Grant, Tenant, User
from corral.panel.db.models import Session as SessionRow
from corral.panel.security.passwords import hash_password
from corral.panel.security.tokens import hash_token, new_token
from corral.panel.services import Panel, TenantRef
from corral.panel.users import create_user

if TYPE_CHECKING:
    from corral.panel.gateway import DaemonStarter
    from tests.conftest import Corral
    from tests.support.tls import Pki

ORIGIN = "http://testserver"
PASSWORD = "correct horse battery staple"
SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"
"""An app that runs until stopped and writes nothing."""
HELLO = "import time\nprint('hello', flush=True)\nwhile True:\n    time.sleep(1)\n"
"""An app that writes one line when it starts, then runs until stopped."""
TICKER = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)\n"
"""An app that writes a line to stdout five times a second (a log stream never idles)."""
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
"""Params for a module-scoped database fixture, as conftest's `database_url` has them."""
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


def short_dir(prefix: str = "cp") -> Path:
    """A short /tmp directory: tenant daemons' unix socket paths must stay < 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_app(
    home: Path, database_url: str = "", *, starter: DaemonStarter | None = None, **config: object
) -> tuple[Starlette, Panel]:
    cfg = PanelConfig(home=home, database_url=database_url, **config)  # type: ignore[arg-type]
    app = create_app(cfg, database=Database.open(cfg.url), starter=starter, background=())
    return app, app.state.panel


@contextlib.contextmanager
def module_database(request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """The URL of a fresh database of the kind `request.param` names ("sqlite" or
    "postgresql", see DATABASES), for fixtures broader than conftest's per-test one."""
    if request.param == "sqlite":
        yield f"sqlite:///{folder / 'panel.db'}"
        return
    from tests.support.postgres import fresh_database

    with fresh_database(request.getfixturevalue("pg_server"), folder.name) as url:
        yield url


# --- users, tenants, grants ------------------------------------------------------------


def add_user(panel: Panel, name: str, *, admin: bool = False, password: str = PASSWORD) -> int:
    with panel.database.session() as db:
        return create_user(db, name, password, is_admin=admin).id


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


def quick_user(panel: Panel, name: str, *, admin: bool = False) -> int:
    """A user whose password is PASSWORD, stored without hashing it again (argon2 takes
    most of a second: tests that need dozens of users use this)."""
    now = time.time()
    with panel.database.session() as db:
        row = User(
            username=name,
            password_hash=_password_hash(),
            is_admin=admin,
            disabled=False,
            created_at=now,
            password_changed_at=now,
        )
        db.add(row)
        db.flush()
        return row.id


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


def revoke_behind_the_panels_back(panel: Panel, user_id: int, tenant: TenantRef) -> None:
    """Delete a user's grants on a tenant straight in the database, WITHOUT telling the
    permission cache (what another process or a manual SQL fix would do)."""
    with panel.database.session() as db:
        for row in db.scalars(
            select(Grant).where(Grant.user_id == user_id, Grant.tenant_id == tenant.id)
        ):
            db.delete(row)


def rights_of(panel: Panel, user_id: int, tenant: TenantRef) -> set[str]:
    with panel.database.session() as db:
        stmt = select(Grant.right).where(Grant.user_id == user_id, Grant.tenant_id == tenant.id)
        return set(db.scalars(stmt))


def user_exists(panel: Panel, user_id: int) -> bool:
    with panel.database.session() as db:
        return db.get(User, user_id) is not None


# --- sessions, tokens, audit -----------------------------------------------------------


@dataclass(frozen=True)
class Cookie:
    """A session as a browser holds it: the cookie's token and the page's CSRF token."""

    name: str
    token: str
    csrf: str

    @property
    def ref(self) -> str:
        """How the account screens name the session (a prefix of its stored hash)."""
        return hash_token(self.token)[:16]


def open_session(panel: Panel, user_id: int, address: str = "testclient") -> Cookie:
    """A new session for the user, made by the Authenticator exactly as a login makes it
    (without the password check, which costs most of a second)."""
    with panel.database.session() as db:
        user = db.get(User, user_id)
        assert user is not None, f"no user {user_id}"
        token = panel.auth.create_session(db, user, address, "pytest")
        db.flush()
        row = db.get(SessionRow, hash_token(token))
        assert row is not None
        return Cookie(panel.cookie_name, token, row.csrf_token)


def session_exists(panel: Panel, cookie: Cookie) -> bool:
    with panel.database.session() as db:
        return db.get(SessionRow, hash_token(cookie.token)) is not None


def client_with(app: Starlette, cookie: Cookie | None) -> TestClient:
    """A TestClient (no redirects followed) that sends this session's cookie."""
    client = TestClient(app, follow_redirects=False)
    if cookie is not None:
        client.cookies.set(cookie.name, cookie.token)
    return client


def add_api_token(panel: Panel, user_id: int, name: str = "t") -> tuple[int, str]:
    """A personal API token of the user: (its id, the token to send as Bearer)."""
    token, digest = new_token("crl")
    with panel.database.session() as db:
        row = ApiToken(user_id=user_id, name=name, token_hash=digest, created_at=time.time())
        db.add(row)
        db.flush()
        return row.id, token


def token_exists(panel: Panel, token_id: int) -> bool:
    with panel.database.session() as db:
        return db.get(ApiToken, token_id) is not None


def audit_entries(panel: Panel, after_id: int = 0) -> list[AuditEntry]:
    """Audit entries with an id above `after_id`, oldest first."""
    with panel.database.session() as db:
        stmt = select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id)
        return list(db.scalars(stmt))


def last_audit_id(panel: Panel) -> int:
    with panel.database.session() as db:
        return db.scalar(select(func.max(AuditEntry.id))) or 0


def ws_try(client: TestClient, path: str, *, first_message: bool = False) -> int | None:
    """Open a WebSocket with the panel's own Origin: None when the handshake is accepted
    (after reading one message with `first_message`), else the code it was closed with.

    Leaving the socket, TestClient cancels the app at once, often mid-cleanup; that
    cancellation can surface here as concurrent.futures.CancelledError. It says nothing
    about the panel (a real server lets the stream end), so it is not an error here."""
    try:
        with client.websocket_connect(path, headers={"Origin": ORIGIN}) as ws:
            if first_message:
                ws.receive_json()
    except WebSocketDisconnect as exc:
        return exc.code
    except concurrent.futures.CancelledError:
        pass
    return None


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through GET+POST /login; returns the session's CSRF token (from a page)."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": login_form_token(page.text)},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client)


def login_form_token(page_html: str) -> str:
    """The pre-session token of a login form page."""
    token = _TOKEN.search(page_html)
    assert token, "the login form has no csrf_token field"
    return token.group(1)


def csrf_of(client: TestClient) -> str:
    page = client.get("/account")
    if page.status_code != 200:
        page = client.get("/")
    match = _META.search(page.text)
    assert match and match.group(1), "no CSRF token in the page"
    return match.group(1)


# --- tenants' daemons ------------------------------------------------------------------


@contextlib.contextmanager
def tenant_daemon(home: Path) -> Iterator[Corral]:
    """A running daemon for a tenant whose home is `home` (make it with short_dir: the
    socket path is limited), with app/server.py (SLEEPER), app/hello.py (HELLO) and
    app/ticker.py (TICKER) ready to start. The daemon and every app under it are stopped
    at the end."""
    from corral.paths import Home
    from tests.conftest import Corral

    (home / "app").mkdir(parents=True, exist_ok=True)
    (home / "app" / "server.py").write_text(SLEEPER)
    (home / "app" / "hello.py").write_text(HELLO)
    (home / "app" / "ticker.py").write_text(TICKER)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    corral = Corral(home=Home(home / ".corral"), env=env, workdir=home)
    try:
        corral.start_daemon()
        yield corral
    finally:
        corral.shutdown()


def adopt_daemon(corral: Corral) -> None:
    """Make `corral.shutdown()` also stop a daemon of its home that someone else (the
    panel's starter) started: by its pid file, as a psutil process (never a reused pid)."""
    import psutil

    pid = corral.daemon_pid()
    if pid is None or pid in {p.pid for p in corral.started}:
        return
    with contextlib.suppress(psutil.Error):
        corral.started.append(psutil.Process(pid))


def start_app(corral: Corral, name: str, script: str = "app/server.py") -> None:
    """Start an app of the tenant straight through its daemon (not through the panel)."""
    import sys

    from corral.config.model import AppConfig

    config = AppConfig(
        name=name,
        script=str(corral.workdir / script),
        interpreter=sys.executable,
        cwd=str(corral.workdir),
    )
    corral.call("start", apps=[config.to_dict()], cli_env={"PATH": corral.env["PATH"]})


def processes(corral: Corral) -> list[tuple[str, int, Any, str, int]]:
    """The daemon's process table as comparable rows: (name, instance, pid, status,
    restarts)."""
    return sorted(
        (r["name"], r["instance"], r["pid"], r["status"], r["restarts"]) for r in corral.jlist()
    )


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


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- a real server ---------------------------------------------------------------------


@contextlib.contextmanager
def serve(app: Starlette, pki: Pki | None = None) -> Iterator[str]:
    """uvicorn serving `app` on a free loopback port in a thread (HTTPS with `pki`'s
    certificate); yields its origin, e.g. "http://127.0.0.1:41234". Stopped at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls: dict[str, Any] = {}
    if pki is not None:
        tls = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
    config = uvicorn.Config(  # as corral.panel.server runs it
        app,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        **tls,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"{'https' if pki else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def client_tls_context(pki: Pki) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def submit(
    client: TestClient,
    method: str,
    path: str,
    *,
    api: bool,
    body: dict[str, Any] | None = None,
    csrf: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request as the panel's pages send it: JSON with an X-CSRF-Token header for the
    API, a form with a csrf_token field for pages (`csrf` None: no token at all); the
    headers (Origin, Referer) exactly as given. Redirects are not followed."""
    headers = dict(headers or {})
    fields = dict(body or {})
    response: httpx.Response
    if api:
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        response = client.request(
            method, path, json=fields or None, headers=headers, follow_redirects=False
        )
    else:
        if csrf is not None:
            fields.setdefault("csrf_token", csrf)
        response = client.request(
            method, path, data=fields or None, headers=headers, follow_redirects=False
        )
    return response


class Client:
    """One browser: its own cookies, its session's CSRF token, form posts and API calls."""

    def __init__(self, app: Any) -> None:
        self.http = TestClient(app, follow_redirects=False)
        self.csrf = ""

    def login(self, name: str, password: str = PASSWORD, code: str = "") -> int:
        form = self.http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token
        response = self.http.post(
            "/login",
            data={"username": name, "password": password, "totp": code, "csrf_token": token[1]},
            headers={"Origin": ORIGIN},
        )
        if response.status_code == 303:
            self.csrf = csrf_of(self.http)
        return int(response.status_code)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.http.get(url, **kwargs)

    def post(self, url: str, data: dict[str, str] | None = None) -> Any:
        form = {"csrf_token": self.csrf, **(data or {})}
        return self.http.post(url, data=form, headers={"Origin": ORIGIN})

    def api(self, method: str, url: str, body: Any = None) -> Any:
        headers = {"Origin": ORIGIN, "X-CSRF-Token": self.csrf}
        if body is None:
            return self.http.request(method, url, headers=headers)
        return self.http.request(method, url, json=body, headers=headers)
