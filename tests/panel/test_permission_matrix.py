"""The permission matrix (SPEC 2.3, issue 7): every registered route, HTML, API and
WebSocket, with every kind of actor, on SQLite and on PostgreSQL.

What each route needs is written down here, from the SPEC, in `NEEDS`: the test fails
when the route table has a route this table lacks, or declares a different need, so the
routes' own declarations are checked against the SPEC, not trusted. Each (route, actor)
pair is then requested for real, against a real tenant daemon running a real app, with
requests valid enough to succeed (right CSRF token and Origin, valid bodies, real ids):

- allowed: the route's success status (never 401/403/404), WebSockets accepted;
- anonymous: 303 to /login for a page GET, 401 otherwise, WebSocket closed with 4401;
- a user who cannot see tenant A (grants on B only) and non-admins on admin routes: 404
  (WebSocket 4404), never 403, never details;
- a user who sees tenant A but lacks the right: 403 (WebSocket 4403).

The single-grant actors hold exactly one right, written straight into the database (the
admin screens always add `access` to another right, see
`test_admin_screens_store_access_with_any_other_right`): a right on its own grants exactly
what SPEC 2.3 maps to it, and holding any right on a tenant makes the tenant visible, so a
`control`-only user may stop an app but gets 403 on the process table.

Routes that destroy what they act on (delete an app, a tenant or a user, log out, end a
session, revoke a token) act on throw-away objects made for each case, so the cases can
run in any order, on any xdist worker.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.config.model import AppConfig
from corral.panel.app import load_routes
from corral.panel.db.models import DeployHook, Tenant
from corral.panel.gateway import NoAutostart
from corral.panel.permissions import ADMIN, PUBLIC, USER, Need, Right, tenant
from corral.panel.routing import RouteSpec, registry
from corral.panel.services import Panel, TenantRef
from corral.panel.webhooks import service as webhooks
from tests.conftest import Corral, wait_for
from tests.support.panel import (
    DATABASES,
    ORIGIN,
    PASSWORD,
    Cookie,
    add_api_token,
    add_tenant,
    audit_entries,
    client_with,
    grant,
    last_audit_id,
    login_form_token,
    make_app,
    module_database,
    open_session,
    processes,
    quick_user,
    remove_dir,
    rights_of,
    session_exists,
    short_dir,
    start_app,
    submit,
    tenant_daemon,
    token_exists,
    user_exists,
    ws_try,
)

ACCESS, CONTROL, LOGS, MANAGE = (tenant(r) for r in Right)
APP = "web"
"""The app every {app} route acts on (tenant A's, running under A's daemon)."""

# --- what the SPEC says each route needs ------------------------------------------------
# Key: (method, path) as registered; WebSockets use the method "WS". SPEC 2.3: `access`
# sees the tenant and its process list (and the app's overview and metrics), `control`
# starts/stops/restarts/reloads/scales, `logs` reads, follows, downloads (and clears)
# logs, `manage` creates, deletes and edits apps, env and secrets (reading plain env
# values too: they may be sensitive); server admins manage users, tenants, grants,
# limits, settings and read the audit log; any logged-in user has their account.

T = "/t/{tenant}"
TA = "/t/{tenant}/apps/{app}"
API = "/api/v1/tenants/{tenant}/apps"
APIA = "/api/v1/tenants/{tenant}/apps/{app}"
U = "/admin/users/{user_id:int}"
APIU = "/api/v1/users/{user_id:int}"
AT = "/admin/tenants/{tenant_id:int}"
APIT = "/api/v1/admin/tenants/{tenant_id:int}"

NEEDS: dict[tuple[str, str], Need] = {
    # logging in and out, the start page, health
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): USER,
    ("GET", "/"): USER,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/openapi.json"): USER,
    # a tenant's process list and an app's overview: access
    ("GET", T): ACCESS,
    ("WS", f"{T}/ws/processes"): ACCESS,
    ("GET", API): ACCESS,
    ("GET", TA): ACCESS,
    ("GET", APIA): ACCESS,
    ("GET", f"{APIA}/metrics"): ACCESS,
    # start / stop / restart / reload / scale: control
    **{(m, f"{base}/{verb}"): CONTROL
       for m, base in (("POST", TA), ("POST", APIA))
       for verb in ("start", "stop", "restart", "reload", "scale")},
    # create, delete and edit apps: manage
    ("GET", f"{T}/apps/new"): MANAGE,
    ("POST", f"{T}/apps/new"): MANAGE,
    ("POST", API): MANAGE,
    ("GET", f"{T}/apps/import"): MANAGE,
    ("POST", f"{T}/apps/import"): MANAGE,
    ("POST", f"{API}/import"): MANAGE,
    ("POST", f"{TA}/delete"): MANAGE,
    ("POST", f"{APIA}/delete"): MANAGE,
    ("GET", f"{TA}/config"): MANAGE,
    ("POST", f"{TA}/config"): MANAGE,
    ("GET", f"{APIA}/config"): MANAGE,
    ("PUT", f"{APIA}/config"): MANAGE,
    # env and secrets: manage (plain values may be sensitive: reading them is manage too)
    ("GET", f"{TA}/env"): MANAGE,
    ("POST", f"{TA}/env"): MANAGE,
    ("POST", f"{TA}/env/remove"): MANAGE,
    ("GET", f"{APIA}/env"): MANAGE,
    ("PUT", f"{APIA}/env/{{var}}"): MANAGE,
    ("DELETE", f"{APIA}/env/{{var}}"): MANAGE,
    # the deploy webhook: manage (SPEC 2.3); the public /hooks/deploy/{hook_id} is outside
    # the table (no session: tests/panel/test_webhooks.py)
    **{("POST", f"{TA}/webhook/{verb}"): MANAGE for verb in ("enable", "rotate", "disable")},
    ("GET", f"{APIA}/webhook"): MANAGE,
    **{("POST", f"{APIA}/webhook/{verb}"): MANAGE for verb in ("enable", "rotate", "disable")},
    # git deploys (SPEC 4): reading history and output is access; changing the git
    # source, deploying, rolling back and making a deploy key is manage
    ("GET", f"{TA}/deploy"): ACCESS,
    ("GET", f"{TA}/deploys/{{deploy_id}}"): ACCESS,
    ("WS", f"{TA}/deploys/{{deploy_id}}/ws"): ACCESS,
    ("GET", f"{APIA}/deploy"): ACCESS,
    ("GET", f"{APIA}/deploys"): ACCESS,
    ("GET", f"{APIA}/deploys/{{deploy_id}}"): ACCESS,
    ("GET", f"{APIA}/releases"): ACCESS,
    **{("POST", f"{TA}/{path}"): MANAGE
       for path in ("deploy/source", "deploy/key", "deploys", "rollback")},
    ("PUT", f"{APIA}/deploy/source"): MANAGE,
    **{("POST", f"{APIA}/{path}"): MANAGE for path in ("deploy/key", "deploys", "rollback")},
    # read, follow, download, clear logs: logs
    ("GET", f"{TA}/logs"): LOGS,
    ("POST", f"{TA}/logs/clear"): LOGS,
    ("GET", f"{TA}/logs/download"): LOGS,
    ("WS", f"{TA}/logs/ws"): LOGS,
    ("GET", f"{APIA}/logs"): LOGS,
    ("POST", f"{APIA}/logs/clear"): LOGS,
    # users, tenants, grants, limits, settings, audit log: server admins
    ("GET", "/admin/users"): ADMIN,
    ("POST", "/admin/users"): ADMIN,
    ("GET", U): ADMIN,
    **{("POST", f"{U}/{action}"): ADMIN
       for action in ("disable", "enable", "admin", "password", "sessions/end", "totp/disable",
                      "delete", "grants")},
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("GET", APIU): ADMIN,
    ("PATCH", APIU): ADMIN,
    ("DELETE", APIU): ADMIN,
    ("POST", f"{APIU}/password"): ADMIN,
    ("DELETE", f"{APIU}/sessions"): ADMIN,
    ("DELETE", f"{APIU}/totp"): ADMIN,
    ("GET", f"{APIU}/grants"): ADMIN,
    ("PUT", f"{APIU}/grants"): ADMIN,
    ("PATCH", f"{APIU}/grants"): ADMIN,
    ("GET", "/admin/tenants"): ADMIN,
    ("POST", "/admin/tenants"): ADMIN,
    ("GET", AT): ADMIN,
    ("POST", f"{AT}/limit"): ADMIN,
    ("POST", f"{AT}/grants"): ADMIN,
    ("POST", f"{AT}/delete"): ADMIN,
    ("GET", "/api/v1/admin/tenants"): ADMIN,
    ("POST", "/api/v1/admin/tenants"): ADMIN,
    ("GET", APIT): ADMIN,
    ("PATCH", APIT): ADMIN,
    ("DELETE", APIT): ADMIN,
    ("GET", f"{APIT}/grants"): ADMIN,
    ("PUT", f"{APIT}/grants"): ADMIN,
    ("PATCH", f"{APIT}/grants"): ADMIN,
    ("GET", "/admin/settings"): ADMIN,
    ("POST", "/admin/settings"): ADMIN,
    ("GET", "/api/v1/settings"): ADMIN,
    ("PATCH", "/api/v1/settings"): ADMIN,
    ("GET", "/admin/audit"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    # one's own account: any logged-in user
    ("GET", "/account"): USER,
    **{("POST", f"/account/{action}"): USER
       for action in ("password", "totp/setup", "totp/enable", "totp/disable", "tokens",
                      "tokens/{token_id:int}/revoke", "sessions/{ref}/end")},
    ("GET", "/api/v1/account"): USER,
    ("POST", "/api/v1/account/password"): USER,
    ("POST", "/api/v1/account/totp/setup"): USER,
    ("POST", "/api/v1/account/totp/enable"): USER,
    ("POST", "/api/v1/account/totp/disable"): USER,
    ("GET", "/api/v1/account/tokens"): USER,
    ("POST", "/api/v1/account/tokens"): USER,
    ("DELETE", "/api/v1/account/tokens/{token_id:int}"): USER,
    ("GET", "/api/v1/account/sessions"): USER,
    ("DELETE", "/api/v1/account/sessions/{ref}"): USER,
}  # fmt: skip


def route_key(spec: RouteSpec, method: str) -> tuple[str, str]:
    return ("WS" if spec.kind == "ws" else method, spec.path)


def registered() -> dict[tuple[str, str], RouteSpec]:
    load_routes()
    return {route_key(s, m): s for s in registry.specs for m in s.methods}


ROUTES = registered()


# --- the actors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    name: str
    on_a: frozenset[str] = frozenset()
    """Rights on tenant A."""
    on_b: frozenset[str] = frozenset()
    admin: bool = False
    anonymous: bool = False


ALL = frozenset(r.value for r in Right)
ACTORS = (
    Actor("anonymous", anonymous=True),
    Actor("stranger", on_b=ALL),
    *(Actor(f"only-{r.value}", on_a=frozenset({r.value})) for r in Right),
    Actor("tenant-user", on_a=ALL),
    Actor("admin", admin=True),
)

ALLOW, LOGIN, HIDDEN, FORBIDDEN = "allow", "login", "hidden", "forbidden"


def expected(need: Need, actor: Actor) -> str:
    """SPEC 2.3 for this actor: what the route must answer, in words."""
    if need == PUBLIC:
        return ALLOW
    if actor.anonymous:
        return LOGIN
    if need == USER:
        return ALLOW
    if need == ADMIN:
        return ALLOW if actor.admin else HIDDEN  # never admit that the screen exists
    assert need.right is not None
    if actor.admin:
        return ALLOW
    if not actor.on_a:
        return HIDDEN  # tenant A does not exist for this user
    return ALLOW if need.right.value in actor.on_a else FORBIDDEN


# --- the world: one panel, tenants A, B, C, two daemons, per database --------------------


@dataclass
class World:
    app: Starlette
    panel: Panel
    a: TenantRef
    b: TenantRef
    c: TenantRef
    """A tenant without daemon or users: the {tenant_id} routes act on it."""
    corral_a: Corral
    corral_b: Corral
    homes: Path
    ids: dict[str, int] = field(default_factory=dict)
    """actor name -> user id; also "target", the user the {user_id} routes act on (disabled,
    enabled, made admin...), and "signer", whom POST /login logs in."""
    cookies: dict[str, Cookie] = field(default_factory=dict)
    clients: dict[str, TestClient] = field(default_factory=dict)
    config_text: str = ""
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._serial)}"

    def client(self, actor: Actor) -> TestClient:
        return self.clients[actor.name]

    def user_id(self, actor: Actor) -> int:
        """The actor's id; anonymous acts on the target user's objects."""
        return self.ids["target" if actor.anonymous else actor.name]

    def app_names(self) -> set[str]:
        return {row[0] for row in processes(self.corral_a)}

    def statuses(self, name: str = APP) -> set[str]:
        return {row[3] for row in processes(self.corral_a) if row[0] == name}

    def ensure_online(self, name: str = APP) -> None:
        if self.statuses(name) != {"online"}:
            self.corral_a.call("restart", target=name)
            wait_for(lambda: self.statuses(name) == {"online"})

    def ensure_stopped(self, name: str = APP) -> None:
        self.corral_a.call("stop", target=name)


@pytest.fixture(scope="module", params=DATABASES)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp(f"matrix-{request.param}")
    homes = short_dir("cpm")
    with contextlib.ExitStack() as stack:
        stack.callback(remove_dir, homes)  # last: after the daemons under it stopped
        url = stack.enter_context(module_database(request, folder))
        app, panel = make_app(
            folder / "panel",
            url,
            starter=NoAutostart(),  # never start a daemon behind the test's back
            allowed_hosts=("testserver",),
            tenants_root=homes / "made",
        )
        stack.callback(panel.database.close)
        corral_a = stack.enter_context(tenant_daemon(homes / "a"))
        corral_b = stack.enter_context(tenant_daemon(homes / "b"))
        start_app(corral_a, APP, "app/hello.py")  # a log line per start
        start_app(corral_b, "own")
        world = World(
            app,
            panel,
            add_tenant(panel, "a", homes / "a"),
            add_tenant(panel, "b", homes / "b"),
            add_tenant(panel, "c", homes / "c"),
            corral_a,
            corral_b,
            homes,
        )
        world.ids["target"] = quick_user(panel, "target")
        world.ids["signer"] = quick_user(panel, "signer")  # POST /login logs in as them
        for actor in ACTORS:
            client = stack.enter_context(TestClient(app, follow_redirects=False))
            world.clients[actor.name] = client
            if actor.anonymous:
                continue
            user_id = world.ids[actor.name] = quick_user(panel, actor.name, admin=actor.admin)
            grant(panel, user_id, world.a, actor.on_a)
            grant(panel, user_id, world.b, actor.on_b)
            # A session exactly as a login makes it (the login form, and its argon2 check
            # of most of a second, are tested in test_sessions.py).
            cookie = world.cookies[actor.name] = open_session(panel, user_id)
            client.cookies.set(cookie.name, cookie.token)
        admin = world.clients["admin"]
        world.config_text = admin.get(f"/api/v1/tenants/a/apps/{APP}/config").json()["text"]
        yield world


# --- one request per (route, actor) -----------------------------------------------------


@dataclass
class Case:
    """A concrete request for one (route, actor), and what to check once it is answered."""

    template: str
    values: dict[str, str]
    """The path parameters."""
    body: dict[str, Any] | None = None
    client: TestClient | None = None
    """Who sends it; default: the actor's client."""
    csrf: str | None = None
    """The CSRF token it carries; default: that of the actor's session."""
    after: Callable[[bool], None] | None = None
    """Called with whether the request was allowed: checks the effect (or its absence)
    and cleans up."""

    @property
    def path(self) -> str:
        path = self.template
        for name, value in self.values.items():
            path = path.replace("{" + name + "}", value).replace("{" + name + ":int}", value)
        return path


Builder = Callable[[World, Actor, Case], None]


def _default_case(world: World, key: tuple[str, str]) -> Case:
    values = {
        "tenant": world.a.name,
        "app": APP,
        "user_id": str(world.ids["target"]),
        "tenant_id": str(world.c.id),
    }
    return Case(key[1], values)


# Builders adjust the default case: a valid body, throw-away objects, a check after.


def _body(body: dict[str, Any] | Callable[[World], dict[str, Any]]) -> Builder:
    def build(world: World, actor: Actor, case: Case) -> None:
        case.body = body(world) if callable(body) else dict(body)

    return build


def _running_first(extra: Builder | None = None) -> Builder:
    def build(world: World, actor: Actor, case: Case) -> None:
        world.ensure_online()
        if extra:
            extra(world, actor, case)

    return build


def _stopped_first(world: World, actor: Actor, case: Case) -> None:
    world.ensure_online()
    world.ensure_stopped()
    case.after = lambda allowed: world.ensure_online()


def _new_app(world: World, actor: Actor, case: Case) -> None:
    name = world.fresh("new")
    case.body = {"name": name, "script": "app/server.py"}

    def after(allowed: bool) -> None:
        made = name in world.app_names()
        assert made == allowed, f"app {name} created: {made}"
        if made:
            world.corral_a.call("delete", target=name)

    case.after = after


def _new_import(world: World, actor: Actor, case: Case) -> None:
    """A config upload of two new apps (as pasted text)."""
    names = [world.fresh("imp"), world.fresh("imp")]
    apps = "".join(f"  - name: {n}\n    script: app/server.py\n" for n in names)
    case.body = {"text": f"apps:\n{apps}", "format": "yaml"}

    def after(allowed: bool) -> None:
        made = set(names) & world.app_names()
        assert made == (set(names) if allowed else set()), f"apps imported: {made}"
        for name in made:
            world.corral_a.call("delete", target=name)

    case.after = after


def _doomed_app(world: World, actor: Actor, case: Case) -> None:
    name = world.fresh("doomed")
    start_app(world.corral_a, name)
    case.values["app"] = name

    def after(allowed: bool) -> None:
        left = name in world.app_names()
        assert left != allowed, f"app {name} still there: {left}"
        if left:
            world.corral_a.call("delete", target=name)

    case.after = after


def _secret_names(world: World) -> set[str]:
    return {s["name"] for s in world.corral_a.call("secret_list", app=APP)}


def _new_secret(world: World, actor: Actor, case: Case) -> None:
    """Set a secret (never a plain variable: that would restart the app for every case)."""
    name = world.fresh("MATRIX_")
    if "{var}" in case.template:
        case.values["var"] = name
        case.body = {"value": "matrix value", "secret": True}
    else:
        case.body = {"name": name, "value": "matrix value", "secret": "on"}

    def after(allowed: bool) -> None:
        made = name in _secret_names(world)
        assert made == allowed, f"secret {name} set: {made}"
        if made:
            world.corral_a.call("secret_remove", app=APP, name=name)

    case.after = after


def _doomed_secret(world: World, actor: Actor, case: Case) -> None:
    name = world.fresh("DOOMED_")
    world.corral_a.call("secret_set", app=APP, name=name, value="doomed value")
    if "{var}" in case.template:
        case.values["var"] = name
    else:
        case.body = {"name": name, "kind": "secret"}

    def after(allowed: bool) -> None:
        left = name in _secret_names(world)
        assert left != allowed, f"secret {name} still there: {left}"
        if left:
            world.corral_a.call("secret_remove", app=APP, name=name)

    case.after = after


def _doomed_user(world: World, actor: Actor, case: Case) -> None:
    user_id = quick_user(world.panel, world.fresh("doomed"))
    case.values["user_id"] = str(user_id)
    case.after = lambda allowed: _assert(user_exists(world.panel, user_id) != allowed, "user")


def _doomed_tenant(world: World, actor: Actor, case: Case) -> None:
    name = world.fresh("doomed")
    ref = add_tenant(world.panel, name, world.homes / name)
    case.values["tenant_id"] = str(ref.id)

    def after(allowed: bool) -> None:
        with world.panel.database.session() as db:
            left = db.get(Tenant, ref.id) is not None
        assert left != allowed, f"tenant {name} still there: {left}"

    case.after = after


def _own_session(world: World, actor: Actor, case: Case) -> None:
    """Logout: with a session of its own, so the actor's main one lives on."""
    if actor.anonymous:
        return
    cookie = open_session(world.panel, world.user_id(actor))
    case.client = client_with(world.app, cookie)
    case.csrf = cookie.csrf
    case.after = lambda allowed: _assert(session_exists(world.panel, cookie) != allowed, "session")


def _doomed_session(world: World, actor: Actor, case: Case) -> None:
    cookie = open_session(world.panel, world.user_id(actor))
    case.values["ref"] = cookie.ref
    case.after = lambda allowed: _assert(session_exists(world.panel, cookie) != allowed, "session")


def _doomed_token(world: World, actor: Actor, case: Case) -> None:
    token_id, _ = add_api_token(world.panel, world.user_id(actor), world.fresh("tok"))
    case.values["token_id"] = str(token_id)
    case.after = lambda allowed: _assert(token_exists(world.panel, token_id) != allowed, "token")


def _login(world: World, actor: Actor, case: Case) -> None:
    """POST /login needs the login form's own token (a cookie on path /login): take it
    from a fresh form and give it to a copy of the actor's client (a successful login
    replaces the session cookie, which the actor keeps using)."""
    form = TestClient(world.app).get("/login")
    client = TestClient(world.app, follow_redirects=False)
    if not actor.anonymous:
        cookie = world.cookies[actor.name]
        client.cookies.set(cookie.name, cookie.token)
    client.cookies.set("corral_login", form.cookies["corral_login"], path="/login")
    case.client = client
    case.body = {
        "username": "signer",
        "password": PASSWORD,
        "csrf_token": login_form_token(form.text),
    }


def _hook_digest(world: World) -> str | None:
    with world.panel.database.session() as db:
        row = db.scalar(
            select(DeployHook).where(DeployHook.tenant_id == world.a.id, DeployHook.app == APP)
        )
        return row.token_sha256 if row else None


def _webhook(verb: str) -> Builder:
    """Enable acts on an app without a hook, rotate and disable on one with a hook."""

    def build(world: World, actor: Actor, case: Case) -> None:
        with contextlib.suppress(webhooks.HookError):
            webhooks.disable(world.panel, world.a, APP)
        if verb != "enable":
            webhooks.enable(world.panel, world.a, APP, "matrix")
        before = _hook_digest(world)

        def after(allowed: bool) -> None:
            now = _hook_digest(world)
            changed = {"enable": now is not None, "rotate": now not in (None, before),
                       "disable": now is None}[verb]  # fmt: skip
            _assert(changed == allowed, "webhook")

        case.after = after

    return build


def _assert(condition: bool, what: str) -> None:
    assert condition, f"the {what} was (not) changed against the verdict"


_GIT_APPS: dict[int, tuple[str, str]] = {}
"""Per world: the git app the deploy routes act on, and one finished deploy of it."""
NO_REPO = "https://127.0.0.1:9/nothing.git"
"""Nothing listens there: a deploy fails at its fetch, at once."""


def _deploys_of(world: World, name: str) -> list[dict[str, Any]]:
    return list(world.corral_a.call("deploy_history", app=name, limit=200))


def _all_finished(world: World, name: str) -> bool:
    return all(d["status"] in ("succeeded", "failed") for d in _deploys_of(world, name))


def _git_app(world: World) -> tuple[str, str]:
    """A git app of tenant A (never launched: it has no release) with one deploy done."""
    if id(world) not in _GIT_APPS:
        name = world.fresh("gitapp")
        config = AppConfig(name=name, script="app/server.py", git={"repo": NO_REPO})
        world.corral_a.call("start", apps=[config.to_dict()])
        deploy_id = world.corral_a.call("deploy", app=name)["deploy"]["id"]
        wait_for(lambda: _all_finished(world, name), timeout=60)
        _GIT_APPS[id(world)] = (name, deploy_id)
    return _GIT_APPS[id(world)]


def _on_a_deploy(world: World, actor: Actor, case: Case) -> None:
    case.values["app"], case.values["deploy_id"] = _git_app(world)


def _new_deploy(world: World, actor: Actor, case: Case) -> None:
    name, _ = _git_app(world)
    case.values["app"] = name
    before = len(_deploys_of(world, name))

    def after(allowed: bool) -> None:
        wait_for(lambda: _all_finished(world, name), timeout=60)
        added = len(_deploys_of(world, name)) - before
        assert added == (1 if allowed else 0), f"{added} deploys queued"

    case.after = after


def _new_source(world: World, actor: Actor, case: Case) -> None:
    """A throw-away app gets a git source (saving one never restarts anything)."""
    name = world.fresh("src")
    start_app(world.corral_a, name)
    case.values["app"] = name
    case.body = {"repo": NO_REPO, "branch": "main", "script": "app/server.py", "keep": "2"}

    def after(allowed: bool) -> None:
        config = world.corral_a.call("describe", target=name)[0]["config"]
        assert (config.get("git") is not None) == allowed, "git source saved"
        world.corral_a.call("delete", target=name)

    case.after = after


BUILDERS: dict[tuple[str, str], Builder] = {
    # git deploys (on a git app of A's, made once per world)
    **{(m, path): _on_a_deploy
       for m, path in (("GET", f"{TA}/deploys/{{deploy_id}}"),
                       ("WS", f"{TA}/deploys/{{deploy_id}}/ws"),
                       ("GET", f"{APIA}/deploys/{{deploy_id}}"))},
    **{("POST", f"{base}/{path}"): _new_deploy
       for base in (TA, APIA) for path in ("deploys", "rollback")},
    ("POST", f"{TA}/deploy/source"): _new_source,
    ("PUT", f"{APIA}/deploy/source"): _new_source,
    ("POST", "/login"): _login,
    ("POST", "/logout"): _own_session,
    # apps
    ("POST", API): _new_app,
    ("POST", f"{T}/apps/new"): _new_app,
    ("POST", f"{API}/import"): _new_import,
    ("POST", f"{T}/apps/import"): _new_import,
    ("POST", f"{TA}/start"): _stopped_first,
    ("POST", f"{APIA}/start"): _stopped_first,
    **{(m, f"{base}/{verb}"): _running_first()
       for m, base in (("POST", TA), ("POST", APIA)) for verb in ("stop", "restart", "reload")},
    ("POST", f"{TA}/scale"): _running_first(_body({"count": "1"})),
    ("POST", f"{APIA}/scale"): _running_first(_body({"count": "1"})),
    ("POST", f"{TA}/delete"): _doomed_app,
    ("POST", f"{APIA}/delete"): _doomed_app,
    ("POST", f"{TA}/config"): _running_first(_body(lambda w: {"text": w.config_text})),
    ("PUT", f"{APIA}/config"): _running_first(_body(lambda w: {"text": w.config_text})),
    ("POST", f"{TA}/env"): _new_secret,
    ("PUT", f"{APIA}/env/{{var}}"): _new_secret,
    ("POST", f"{TA}/env/remove"): _doomed_secret,
    ("DELETE", f"{APIA}/env/{{var}}"): _doomed_secret,
    **{(m, f"{base}/webhook/{verb}"): _webhook(verb)
       for m, base in (("POST", TA), ("POST", APIA)) for verb in ("enable", "rotate", "disable")},
    # admin: users (the {user_id} routes act on "target"; delete on a throw-away user)
    ("POST", "/admin/users"): lambda w, a, c: setattr(
        c, "body", {"username": w.fresh("made"), "password": PASSWORD}),
    ("POST", "/api/v1/users"): lambda w, a, c: setattr(
        c, "body", {"username": w.fresh("made"), "password": PASSWORD}),
    ("POST", f"{U}/admin"): _body({"is_admin": "false"}),
    ("POST", f"{U}/password"): _body({"password": PASSWORD}),
    ("POST", f"{U}/grants"): _body(lambda w: {f"t-{w.c.id}": "1", f"g-{w.c.id}-logs": "on"}),
    ("POST", f"{U}/delete"): _doomed_user,
    ("DELETE", APIU): _doomed_user,
    ("PATCH", APIU): _body({"disabled": False}),
    ("POST", f"{APIU}/password"): _body({"password": PASSWORD}),
    ("PUT", f"{APIU}/grants"): _body({"grants": {"c": ["logs"]}}),
    ("PATCH", f"{APIU}/grants"): _body({"grants": {"c": ["logs"]}}),
    # admin: tenants (the {tenant_id} routes act on C; delete on a throw-away tenant)
    ("POST", "/admin/tenants"): lambda w, a, c: setattr(c, "body", {"name": w.fresh("made")}),
    ("POST", "/api/v1/admin/tenants"): lambda w, a, c: setattr(
        c, "body", {"name": w.fresh("made")}),
    ("POST", f"{AT}/limit"): _body({"app_limit": "5"}),
    ("PATCH", APIT): _body({"app_limit": 5}),
    ("POST", f"{AT}/grants"): _body(lambda w: {f"u-{w.ids['target']}": "1",
                                               f"g-{w.ids['target']}-access": "on"}),
    ("PUT", f"{APIT}/grants"): _body({"grants": {"target": ["access"]}}),
    ("PATCH", f"{APIT}/grants"): _body({"grants": {"target": ["access"]}}),
    ("POST", f"{AT}/delete"): _doomed_tenant,
    ("DELETE", APIT): _doomed_tenant,
    ("POST", "/admin/settings"): _body({"audit.retention": "90d"}),
    ("PATCH", "/api/v1/settings"): _body({"audit.retention": "90d"}),
    # one's own account (a password change is refused by validation: 422, no argon2)
    ("POST", "/account/password"): _body({"current_password": "x", "new_password": "short"}),
    ("POST", "/api/v1/account/password"): _body({"current_password": "x", "new_password": "s"}),
    ("POST", "/account/totp/enable"): _body({"secret": "x", "setup_token": "x", "code": "1"}),
    ("POST", "/api/v1/account/totp/enable"): _body({"secret": "x", "setup_token": "x",
                                                    "code": "1"}),
    ("POST", "/account/totp/disable"): _body({"code": "123456"}),
    ("POST", "/api/v1/account/totp/disable"): _body({"code": "123456"}),
    ("POST", "/account/tokens"): lambda w, a, c: setattr(c, "body", {"name": w.fresh("tok")}),
    ("POST", "/api/v1/account/tokens"): lambda w, a, c: setattr(
        c, "body", {"name": w.fresh("tok")}),
    ("POST", "/account/tokens/{token_id:int}/revoke"): _doomed_token,
    ("DELETE", "/api/v1/account/tokens/{token_id:int}"): _doomed_token,
    ("POST", "/account/sessions/{ref}/end"): _doomed_session,
    ("DELETE", "/api/v1/account/sessions/{ref}"): _doomed_session,
}  # fmt: skip

OK: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", f"{APIA}/deploys"): (202,),  # queued
    ("POST", f"{APIA}/rollback"): (202,),  # queued (it fails later: no release to go back to)
    ("GET", "/login"): (200, 303),  # a logged-in user is sent on to /
    ("GET", "/"): (200, 303),  # a user with one tenant is sent straight to it
    ("POST", "/admin/users"): (303,),  # with a password given: on to the new user
    ("POST", "/api/v1/users"): (201,),
    ("POST", "/api/v1/admin/tenants"): (201,),
    ("POST", API): (201,),
    ("POST", f"{API}/import"): (201,),
    ("POST", "/api/v1/account/tokens"): (201,),
    ("POST", "/account/tokens"): (200,),  # the new token is shown once, on the page
    ("POST", "/account/totp/setup"): (200,),
    ("POST", f"{U}/password"): (200,),  # the page, saying the user was logged out
    ("POST", f"{TA}/webhook/enable"): (200,),  # the token is shown once, on the page
    ("POST", f"{TA}/webhook/rotate"): (200,),
    ("POST", f"{APIA}/webhook/enable"): (201,),
    # refused by validation after the permission check: proof that the endpoint ran
    **{key: (422,) for key in (
        ("POST", "/account/password"), ("POST", "/api/v1/account/password"),
        ("POST", "/account/totp/enable"), ("POST", "/api/v1/account/totp/enable"),
        ("POST", "/account/totp/disable"), ("POST", "/api/v1/account/totp/disable"))},
}  # fmt: skip
"""The success status of an allowed request, where it is not 200 (GET, API) or 303 (a
page's form POST)."""


def ok_statuses(key: tuple[str, str], spec: RouteSpec) -> tuple[int, ...]:
    if key in OK:
        return OK[key]
    return (303,) if spec.kind == "page" and key[0] != "GET" else (200,)


def build_case(world: World, key: tuple[str, str], actor: Actor) -> Case:
    case = _default_case(world, key)
    builder = BUILDERS.get(key)
    if builder is not None:
        builder(world, actor, case)
    return case


def send(
    world: World, key: tuple[str, str], spec: RouteSpec, actor: Actor, case: Case
) -> httpx.Response:
    """The request as the panel's own pages send it: CSRF token and Origin on a change."""
    method = key[0]
    csrf = case.csrf or (None if actor.anonymous else world.cookies[actor.name].csrf)
    changes = method != "GET"
    return submit(
        case.client or world.client(actor),
        method,
        case.path,
        api=spec.kind == "api",
        body=case.body,
        csrf=csrf if changes else None,
        headers={"Origin": ORIGIN} if changes else {},
    )


def verdict_of(response: httpx.Response, key: tuple[str, str], spec: RouteSpec) -> str:
    status = response.status_code
    location = response.headers.get("location", "")
    if status == 303 and location.startswith("/login?next="):
        return LOGIN
    if status == 401:
        return LOGIN
    if status == 404:
        return HIDDEN
    if status == 403:
        return FORBIDDEN
    if status in ok_statuses(key, spec):
        return ALLOW
    return f"unexpected {status}: {response.text[:300]}"


def ws_verdict(world: World, case: Case, actor: Actor) -> str:
    code = ws_try(world.client(actor), case.path)
    if code is None:
        return ALLOW
    return {4401: LOGIN, 4404: HIDDEN, 4403: FORBIDDEN}.get(code, f"closed {code}")


def csrf_denials(world: World, since: int) -> list[str]:
    return [e.action for e in audit_entries(world.panel, since) if e.action.startswith("csrf:")]


CASES = [(key, actor) for key in sorted(set(ROUTES) | set(NEEDS)) for actor in ACTORS]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "actor"), CASES, ids=[f"{k[0]} {k[1]} as {a.name}" for k, a in CASES]
)
def test_route_answers_each_actor_as_the_spec_says(
    world: World, key: tuple[str, str], actor: Actor
) -> None:
    assert key in ROUTES, f"{key} is in the table but no longer registered"
    assert key in NEEDS, f"{key} is registered but the matrix does not say what it needs"
    spec = ROUTES[key]
    want = expected(NEEDS[key], actor)
    case = build_case(world, key, actor)
    since = last_audit_id(world.panel)
    if key[0] == "WS":
        got = ws_verdict(world, case, actor)
    else:
        response = send(world, key, spec, actor, case)
        got = verdict_of(response, key, spec)
        if want == LOGIN and spec.kind == "page" and key[0] == "GET":
            assert response.status_code == 303, "an anonymous page view is sent to /login"
    assert got == want, f"{key[0]} {case.path} as {actor.name}: {got}, the SPEC says {want}"
    assert not csrf_denials(world, since), "a valid request was refused as a CSRF attempt"
    if case.after is not None:
        case.after(got == ALLOW)


API_KEYS = sorted(key for key, spec in ROUTES.items() if spec.kind == "api")


@pytest.mark.slow
@pytest.mark.parametrize("key", API_KEYS, ids=[f"{m} {p}" for m, p in API_KEYS])
def test_an_api_token_gets_the_same_answers_as_a_session(
    world: World, key: tuple[str, str]
) -> None:
    """The API with personal tokens (Bearer, no cookie, no CSRF token, no Origin): each
    actor's token is allowed and refused exactly as the matrix says; an unknown token is
    401 everywhere."""
    spec = ROUTES[key]
    problems = []
    for actor in ACTORS:
        if actor.anonymous:
            token = "crl_not-a-token"
        else:
            _, token = add_api_token(world.panel, world.ids[actor.name], world.fresh("api"))
        case = build_case(world, key, actor)
        client = TestClient(world.app, follow_redirects=False)
        response = submit(
            client,
            key[0],
            case.path,
            api=True,
            body=case.body,
            headers={"Authorization": f"Bearer {token}"},
        )
        got, want = verdict_of(response, key, spec), expected(NEEDS[key], actor)
        if got != want:
            problems.append(f"{actor.name}: {got}, the SPEC says {want}")
        if case.after is not None:
            case.after(got == ALLOW)
    assert not problems, "\n".join(problems)


# --- the table itself -------------------------------------------------------------------


def test_every_registered_route_is_in_the_table_with_the_need_it_declares() -> None:
    missing = sorted(set(ROUTES) - set(NEEDS))
    stale = sorted(set(NEEDS) - set(ROUTES))
    assert not missing, f"routes the matrix does not know (add them to NEEDS): {missing}"
    assert not stale, f"routes in NEEDS that are not registered: {stale}"
    wrong = {
        f"{k[0]} {k[1]}": f"declares {ROUTES[k].need}, SPEC: {NEEDS[k]}"
        for k in NEEDS
        if ROUTES[k].need != NEEDS[k]
    }
    assert not wrong, wrong
    kinds = {spec.kind for spec in ROUTES.values()}
    assert kinds == {"page", "api", "ws"}, kinds


def test_every_tenant_route_names_its_tenant() -> None:
    """A tenant right without {tenant} in the path could not be checked at all."""
    for (method, path), need in NEEDS.items():
        if need.right is not None:
            assert "{tenant}" in path, f"{method} {path}"


# --- beyond the matrix ------------------------------------------------------------------


@pytest.mark.slow
def test_a_stranger_cannot_reach_tenant_a_through_their_own_tenant(world: World) -> None:
    """Tenant B's user, naming B in the path and A's app: B's daemon knows no such app.
    The panel never routes a name to another tenant's daemon."""
    client = world.clients["stranger"]
    cookie = world.cookies["stranger"]
    before = processes(world.corral_a)
    headers = {"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf}
    for path in (f"/t/b/apps/{APP}", f"/t/b/apps/{APP}/logs", f"/t/b/apps/{APP}/config",
                 f"/api/v1/tenants/b/apps/{APP}", f"/api/v1/tenants/b/apps/{APP}/logs",
                 f"/t/b/apps/{APP}/logs/download"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert str(world.a.home) not in response.text
    for verb in ("stop", "restart", "delete", "scale"):
        body = {"count": "2"} if verb == "scale" else None
        response = client.post(f"/api/v1/tenants/b/apps/{APP}/{verb}", json=body, headers=headers)
        assert response.status_code == 404, (verb, response.text)
    listing = client.get("/api/v1/tenants/b/apps").json()
    assert [a["name"] for a in listing["apps"]] == ["own"]
    assert processes(world.corral_a) == before, "tenant A's apps were touched"
    # B's own log stream for that name: B's daemon answers that it has no such app.
    with client.websocket_connect(f"/t/b/apps/{APP}/logs/ws", headers={"Origin": ORIGIN}) as ws:
        assert "error" in ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404


@pytest.mark.slow
def test_unknown_objects_answer_404_for_everyone(world: World) -> None:
    """An admin sees everything, yet a tenant, app, user or id that does not exist is a
    plain 404: the same answer a user without the right gets, so nothing leaks."""
    admin = world.clients["admin"]
    for path in ("/t/nosuch", "/t/a/apps/nosuch", "/api/v1/tenants/nosuch/apps",
                 "/api/v1/tenants/a/apps/nosuch", "/admin/users/999999",
                 "/api/v1/users/999999", "/admin/tenants/999999",
                 "/api/v1/admin/tenants/999999"):  # fmt: skip
        assert admin.get(path).status_code == 404, path
    user = world.clients["tenant-user"]
    for missing, unseen in (("/t/nosuch", "/t/b"), ("/api/v1/tenants/nosuch/apps/own",
                            "/api/v1/tenants/b/apps/own")):  # fmt: skip
        gone, hidden = user.get(missing), user.get(unseen)
        assert gone.status_code == hidden.status_code == 404
        assert gone.text == hidden.text  # exists but not theirs: word for word the same


@pytest.mark.slow
def test_other_users_tokens_and_sessions_answer_404_and_stay(world: World) -> None:
    """A user's own objects (API tokens, sessions) by another user's id: 404, untouched."""
    victim = world.ids["only-logs"]
    token_id, _ = add_api_token(world.panel, victim, world.fresh("victim"))
    session = open_session(world.panel, victim)
    thief = world.cookies["tenant-user"]
    client = world.clients["tenant-user"]
    form = {"csrf_token": thief.csrf}
    headers = {"Origin": ORIGIN, "X-CSRF-Token": thief.csrf}
    answers = [
        client.post(f"/account/tokens/{token_id}/revoke", data=form, headers=headers),
        client.delete(f"/api/v1/account/tokens/{token_id}", headers=headers),
        client.post(f"/account/sessions/{session.ref}/end", data=form, headers=headers),
        client.delete(f"/api/v1/account/sessions/{session.ref}", headers=headers),
    ]
    assert [r.status_code for r in answers] == [404] * 4
    assert token_exists(world.panel, token_id)
    assert session_exists(world.panel, session)
    listed = client.get("/api/v1/account/tokens").json()["tokens"]
    assert token_id not in {t["id"] for t in listed}


def _give(world: World, way: str, user_id: int, name: str, right: str) -> httpx.Response:
    """Grant `right` on tenant C to the user, the way an admin would."""
    admin = world.clients["admin"]
    csrf = world.cookies["admin"].csrf
    api = {"Origin": ORIGIN, "X-CSRF-Token": csrf}
    page = {"Origin": ORIGIN}
    c = world.c.id
    response: httpx.Response
    if way == "user page":
        form = {"csrf_token": csrf, f"t-{c}": "1", f"g-{c}-{right}": "on"}
        response = admin.post(f"/admin/users/{user_id}/grants", data=form, headers=page)
    elif way == "user API":
        body = {"grants": {"c": [right]}}
        response = admin.put(f"/api/v1/users/{user_id}/grants", json=body, headers=api)
    elif way == "tenant page":
        form = {"csrf_token": csrf, f"u-{user_id}": "1", f"g-{user_id}-{right}": "on"}
        response = admin.post(f"/admin/tenants/{c}/grants", data=form, headers=page)
    else:
        body = {"grants": {name: [right]}}
        response = admin.patch(f"/api/v1/admin/tenants/{c}/grants", json=body, headers=api)
    return response


@pytest.mark.slow
def test_admin_screens_store_access_with_any_other_right(world: World) -> None:
    """Every way an admin grants (user page and API, tenant page and API): a single
    `control`, `logs` or `manage` brings `access` along (a right on a tenant one cannot
    see would be useless); `access` stays alone."""
    for right in ("access", "control", "logs", "manage"):
        for way in ("user page", "user API", "tenant page", "tenant API"):
            name = world.fresh("granted")
            user_id = quick_user(world.panel, name)
            response = _give(world, way, user_id, name, right)
            assert response.status_code in (200, 303), (way, response.text)
            assert rights_of(world.panel, user_id, world.c) == {"access", right}, way


@pytest.mark.slow
def test_an_app_is_named_exactly_never_by_id_pattern_or_all(world: World) -> None:
    """{app} is one app's exact name: "all", an id or a pattern reaches nothing (the
    daemon itself would take them as targets for many apps)."""
    world.ensure_online()
    before = processes(world.corral_a)
    client = world.clients["admin"]
    headers = {"Origin": ORIGIN, "X-CSRF-Token": world.cookies["admin"].csrf}
    for name in ("all", "0", ".*", "web,all", "WEB", "we%2A", "%2Fweb%2F"):
        for verb in ("stop", "restart", "delete"):
            response = client.post(f"/api/v1/tenants/a/apps/{name}/{verb}", headers=headers)
            assert response.status_code == 404, (name, verb, response.text)
        assert client.get(f"/api/v1/tenants/a/apps/{name}/logs").status_code == 404, name
    assert processes(world.corral_a) == before


@pytest.mark.slow
def test_a_state_change_refused_for_a_missing_right_is_audited(world: World) -> None:
    """SPEC 2.6: every state-changing action is recorded with its result, a refusal too."""
    world.ensure_online()
    cookie = world.cookies["only-access"]
    client = world.clients["only-access"]
    since = last_audit_id(world.panel)
    answers = [
        client.post(
            f"/api/v1/tenants/a/apps/{APP}/stop",
            headers={"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf},
        ),
        client.post(
            f"/t/a/apps/{APP}/delete", data={"csrf_token": cookie.csrf}, headers={"Origin": ORIGIN}
        ),
    ]
    assert [a.status_code for a in answers] == [403, 403]
    entries = [(e.actor, e.tenant, e.app, e.result) for e in audit_entries(world.panel, since)]
    assert entries == [("only-access", "a", APP, "denied")] * 2
    assert world.statuses() == {"online"}
