"""CSRF and Origin checks (SPEC 2.4): every state-changing route refuses a request made
with the session cookie but without the session's own CSRF token, or from another origin;
nothing changes, and the refusal is audited. GET never changes anything. API tokens need
no CSRF token; the session cookie alone never authorises an API call that changes state.

The requests are the permission matrix's (tests/panel/test_permission_matrix.py): made
by an admin, valid in every other respect, so that each would succeed with the right
token and Origin (which the matrix checks) and its effect would show here if it slipped
through.
"""

# ruff: noqa: F811  (the matrix's fixture is imported and used as a parameter)
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from corral.panel.db.models import ApiToken, Grant, Setting, Tenant, User
from corral.panel.db.models import Session as SessionRow
from corral.panel.gateway import DevStarter
from corral.panel.routing import RouteSpec
from tests.conftest import wait_for
from tests.panel.test_permission_matrix import (  # noqa: F401
    ACTORS,
    APP,
    ROUTES,
    Actor,
    World,
    build_case,
    world,
)
from tests.support.panel import (
    ORIGIN,
    PASSWORD,
    add_api_token,
    add_tenant,
    adopt_daemon,
    audit_entries,
    client_with,
    grant,
    last_audit_id,
    login_form_token,
    make_app,
    open_session,
    processes,
    quick_user,
    remove_dir,
    session_exists,
    short_dir,
    start_app,
    submit,
    tenant_daemon,
    ws_try,
)

ADMIN = next(a for a in ACTORS if a.name == "admin")
EVIL = "http://evil.example"

# (csrf token to send, headers): the token is "right" (this session's), "none", "wrong"
# or "other" (another live session's of the same user).
ATTACKS: dict[str, tuple[str, dict[str, str]]] = {
    "missing token": ("none", {"Origin": ORIGIN}),
    "wrong token": ("wrong", {"Origin": ORIGIN}),
    "token of another session": ("other", {"Origin": ORIGIN}),
    "foreign Origin": ("right", {"Origin": EVIL}),
    "null Origin": ("right", {"Origin": "null"}),
    "Origin with another port": ("right", {"Origin": f"{ORIGIN}:8080"}),
    "Origin with another scheme": ("right", {"Origin": "https://testserver"}),
    "no Origin and no Referer": ("right", {}),
    "Referer from another origin": ("right", {"Referer": f"{EVIL}/t/a"}),
    "foreign Origin, own Referer": ("right", {"Origin": EVIL, "Referer": f"{ORIGIN}/t/a"}),
}
CHANGING = sorted(
    key for key, spec in ROUTES.items() if key[0] not in ("GET", "WS") and key != ("POST", "/login")
)
GETS = sorted(key for key in ROUTES if key[0] in ("GET", "WS"))


def state(world: World) -> dict[str, Any]:
    """Everything a request could change: the panel's tables (but the audit log and the
    sessions' last-seen times), tenant A's processes, and whether its app has logs."""
    with world.panel.database.session() as db:
        tables = {
            "users": sorted(
                (u.id, u.username, u.is_admin, u.disabled, u.password_hash, u.totp_secret)
                for u in db.scalars(select(User))
            ),
            "tenants": sorted(
                (t.id, t.name, t.home, t.app_limit) for t in db.scalars(select(Tenant))
            ),
            "grants": sorted((g.user_id, g.tenant_id, g.right) for g in db.scalars(select(Grant))),
            "tokens": sorted((t.id, t.user_id, t.name) for t in db.scalars(select(ApiToken))),
            "sessions": sorted((s.id, s.user_id) for s in db.scalars(select(SessionRow))),
            "settings": sorted((s.key, s.value) for s in db.scalars(select(Setting))),
        }
    tables["processes"] = processes(world.corral_a)
    # The app writes a line when it starts (a restart may still be writing it): the log
    # is never empty unless something cleared it.
    tables["logs"] = bool(wait_for(lambda: world.panel.daemon(world.a).tail(APP, 1), 5))
    return tables


@pytest.mark.slow
@pytest.mark.parametrize("key", CHANGING, ids=[f"{m} {p}" for m, p in CHANGING])
def test_a_state_change_without_token_or_from_elsewhere_is_refused_and_audited(
    world: World, key: tuple[str, str]
) -> None:
    spec = ROUTES[key]
    other = open_session(world.panel, world.ids["admin"])
    problems: list[str] = []
    for attack, (token, headers) in ATTACKS.items():
        case = build_case(world, key, ADMIN)
        right = case.csrf or world.cookies["admin"].csrf
        csrf = {"right": right, "none": None, "wrong": "x" * len(right), "other": other.csrf}
        before, since = state(world), last_audit_id(world.panel)
        response = submit(
            case.client or world.client(ADMIN),
            key[0],
            case.path,
            api=spec.kind == "api",
            body=case.body,
            csrf=csrf[token],
            headers=headers,
        )
        after = state(world)
        entries = [(e.actor, e.action, e.result) for e in audit_entries(world.panel, since)]
        if response.status_code != 403:
            problems.append(f"{attack}: {response.status_code} {response.text[:200]}")
        if after != before:
            changed = sorted(k for k in after if after[k] != before[k])
            problems.append(f"{attack}: changed {changed}")
        if entries != [("admin", f"csrf:{spec.name}", "denied")]:
            problems.append(f"{attack}: audit {entries}")
        if case.after is not None:
            case.after(False)  # the route's own effect did not happen (and clean-up)
    assert not problems, "\n".join(problems)


def _get(world: World, key: tuple[str, str], spec: RouteSpec, actor: Actor) -> None:
    case = build_case(world, key, actor)
    client = world.client(actor)
    if key[0] == "WS":
        ws_try(client, case.path, first_message=key[1].endswith("/ws/processes"))
        return
    response = client.get(case.path)
    assert response.status_code < 500, response.text


@pytest.mark.slow
@pytest.mark.parametrize("key", GETS, ids=[f"{m} {p}" for m, p in GETS])
def test_get_never_changes_state(world: World, key: tuple[str, str]) -> None:
    """Whoever asks (allowed or not), a GET leaves the database, the audit log and the
    tenant's processes as they were."""
    for actor in ACTORS:
        before, since = state(world), last_audit_id(world.panel)
        _get(world, key, ROUTES[key], actor)
        assert state(world) == before, f"{key} as {actor.name} changed something"
        assert audit_entries(world.panel, since) == [], f"{key} as {actor.name} audited"


@pytest.mark.slow
def test_a_link_or_an_image_cannot_trigger_an_action(world: World) -> None:
    """GET and HEAD on a path that only takes a state change: 405, nothing changes.

    One exception: a path a readable route's pattern also matches (.../apps/import is
    what .../apps/{app} reads for an app named "import", a reserved name no app can
    have) answers that route's 404."""
    readable = {path for method, path in ROUTES if method in ("GET", "WS")}
    keys = [key for key in CHANGING if key[1] not in readable]
    assert keys
    client = world.client(ADMIN)
    for key in keys:
        path = key[1]
        case = build_case(world, key, ADMIN)
        shadowed = any(
            ROUTES[(m, p)].kind != "ws" and _matches(p, case.path) for m, p in ROUTES if m == "GET"
        )
        before, since = state(world), last_audit_id(world.panel)
        for method in ("GET", "HEAD"):
            response = client.request(method, case.path)
            wanted = 404 if shadowed else 405
            assert response.status_code == wanted, (method, case.path, response.status_code)
        assert state(world) == before, path
        assert audit_entries(world.panel, since) == [], path
        if case.after is not None:
            case.after(False)


def _matches(template: str, path: str) -> bool:
    """Whether a route template ("/t/{tenant}/apps/{app}") matches a concrete path."""
    pattern = re.sub(r"\\{\w+(?::\w+)?\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


@pytest.mark.slow
def test_a_get_never_starts_a_stopped_tenant_daemon(database_url: str, tmp_path: Path) -> None:
    """With the panel's default starter (not NoAutostart as elsewhere here): the tenant's
    daemon is down, its apps with it; no page, API read or stream may bring them back."""
    homes = short_dir("cpd")
    starter = DevStarter()  # what the panel uses when not told otherwise
    app, panel = make_app(tmp_path / "panel", database_url, starter=starter,
                          allowed_hosts=("testserver",))  # fmt: skip
    try:
        with tenant_daemon(homes / "a") as corral:
            start_app(corral, APP)
            corral.call("kill")  # stops the apps; the state file remembers they ran
            wait_for(lambda: not corral.home.socket.exists())
            try:
                a = add_tenant(panel, "a", homes / "a")
                user_id = quick_user(panel, "ann")
                grant(panel, user_id, a, ("access", "control", "logs", "manage"))
                client = client_with(app, open_session(panel, user_id))
                started = []
                for method, path in GETS:
                    if "{tenant}" not in path:
                        continue
                    url = path.replace("{tenant}", "a").replace("{app}", APP)
                    if method == "WS":
                        ws_try(client, url, first_message=url.endswith("/processes"))
                    else:
                        client.get(url)
                    if corral.home.socket.exists():
                        started.append(f"{method} {path}")
                        adopt_daemon(corral)
                        corral.shutdown()  # down again for the next route
                        starter.reap()
                assert not started, f"these started the tenant's daemon: {started}"
            finally:
                adopt_daemon(corral)  # whatever the panel started stops with the fixture
    finally:
        panel.database.close()
        starter.reap()
        remove_dir(homes)


# --- API tokens and cookies -------------------------------------------------------------


@pytest.mark.slow
def test_an_api_token_needs_no_csrf_token_nor_origin(world: World) -> None:
    _, token = add_api_token(world.panel, world.ids["tenant-user"], world.fresh("bearer"))
    world.ensure_online()
    bare = TestClient(world.app)
    response = bare.post(
        f"/api/v1/tenants/a/apps/{APP}/stop", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    assert world.statuses() == {"stopped"}
    world.ensure_online()


@pytest.mark.slow
def test_the_session_cookie_alone_never_authorises_an_api_change(world: World) -> None:
    """Cookie and the panel's own Origin, but no token: what a forged cross-site request
    (or a script on a sibling origin) would send."""
    world.ensure_online()
    client = world.client(ADMIN)
    before = state(world)
    for body in (None, {"csrf_token": ""}):
        response = client.post(
            f"/api/v1/tenants/a/apps/{APP}/stop", json=body, headers={"Origin": ORIGIN}
        )
        assert response.status_code == 403, response.text
    query = f"/api/v1/tenants/a/apps/{APP}/stop?csrf_token={world.cookies['admin'].csrf}"
    assert client.post(query, headers={"Origin": ORIGIN}).status_code == 403  # not in URLs
    assert state(world) == before


@pytest.mark.slow
def test_an_unknown_bearer_token_is_refused_even_with_a_good_session(world: World) -> None:
    """A bad Authorization header is never silently replaced by the cookie."""
    world.ensure_online()
    before = state(world)
    cookie = world.cookies["admin"]
    response = world.client(ADMIN).post(
        f"/api/v1/tenants/a/apps/{APP}/stop",
        headers={
            "Authorization": "Bearer crl_forged",
            "Origin": ORIGIN,
            "X-CSRF-Token": cookie.csrf,
        },
    )
    assert response.status_code == 401
    assert state(world) == before


@pytest.mark.slow
def test_a_cross_site_simple_form_is_refused(world: World) -> None:
    """The bodies a cross-site form can send without a preflight: text/plain is not
    understood (415), a form without the token is refused (403); nothing changes."""
    world.ensure_online()
    before = state(world)
    client = world.client(ADMIN)
    plain = client.post(
        f"/t/a/apps/{APP}/stop",
        content=b"csrf_token=x",
        headers={"Origin": EVIL, "Content-Type": "text/plain"},
    )
    assert plain.status_code in (403, 415)
    form = client.post(f"/t/a/apps/{APP}/stop", data={"back": "/t/a"}, headers={"Origin": EVIL})
    assert form.status_code == 403
    assert state(world) == before


# --- what does pass ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_right_token_with_the_own_origin_or_referer_works(world: World) -> None:
    cookie = world.cookies["admin"]
    client = world.client(ADMIN)
    for headers in ({"Origin": ORIGIN}, {"Referer": f"{ORIGIN}/t/a"}, {"Origin": ORIGIN,
                    "Referer": f"{EVIL}/x"}):  # fmt: skip
        world.ensure_online()
        response = submit(
            client, "POST", f"/t/a/apps/{APP}/stop", api=False, csrf=cookie.csrf, headers=headers
        )
        assert response.status_code == 303, (headers, response.text)
        assert world.statuses() == {"stopped"}
    # the token in the header works for a form too (what panel.js sends)
    world.ensure_online()
    response = client.post(
        f"/t/a/apps/{APP}/stop", headers={"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf}
    )
    assert response.status_code == 303
    world.ensure_online()


# --- the login form ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_login_form_has_its_own_token_and_origin_check(world: World) -> None:
    """Login CSRF (logging the victim into the attacker's account) is refused like any
    other: the form's pre-session token and the Origin are both needed."""
    signer = world.ids["signer"]
    sessions_before = _sessions_of(world, signer)
    cases: dict[str, tuple[bool, dict[str, str]]] = {
        "missing token": (False, {"Origin": ORIGIN}),
        "foreign Origin": (True, {"Origin": EVIL}),
        "null Origin": (True, {"Origin": "null"}),
        "no Origin and no Referer": (True, {}),
        "Referer from another origin": (True, {"Referer": f"{EVIL}/"}),
    }
    for what, (with_token, headers) in cases.items():
        client = TestClient(world.app, follow_redirects=False)
        token = login_form_token(client.get("/login").text)
        body = {"username": "signer", "password": PASSWORD}
        if with_token:
            body["csrf_token"] = token
        since = last_audit_id(world.panel)
        response = client.post("/login", data=body, headers=headers)
        assert response.status_code == 403, (what, response.status_code)
        assert world.panel.cookie_name not in response.cookies, what
        entries = audit_entries(world.panel, since)
        assert [e.result for e in entries] == ["denied"], what
    wrong = TestClient(world.app, follow_redirects=False)
    wrong.get("/login")
    response = wrong.post(
        "/login",
        data={"username": "signer", "password": PASSWORD, "csrf_token": "forged"},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 403
    assert _sessions_of(world, signer) == sessions_before, "a refused login made a session"


def _sessions_of(world: World, user_id: int) -> set[str]:
    with world.panel.database.session() as db:
        return set(db.scalars(select(SessionRow.id).where(SessionRow.user_id == user_id)))


@pytest.mark.slow
def test_logout_is_a_state_change_too(world: World) -> None:
    """A forged logout (no token, or another origin) leaves the session alive."""
    cookie = open_session(world.panel, world.ids["tenant-user"])
    client = client_with(world.app, cookie)
    for csrf, headers in ((None, {"Origin": ORIGIN}), (cookie.csrf, {"Origin": EVIL})):
        response = submit(client, "POST", "/logout", api=False, csrf=csrf, headers=headers)
        assert response.status_code == 403
        assert session_exists(world.panel, cookie)
    assert client.get("/api/v1/account").status_code == 200
