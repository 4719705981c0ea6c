"""Sessions (SPEC 2.3, 2.4): the cookie and its flags, the id rotated at login, idle and
absolute time-outs, logout and the 10 s permission cache, login throttling and its audit
trail, the `next` redirect, security headers, body size limits and the Host check.

Every test runs on SQLite and on PostgreSQL. Time-outs are tested with the
Authenticator's injectable clock, never by sleeping.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.panel.db.models import ApiToken, Session
from corral.panel.gateway import NoAutostart
from corral.panel.security.throttle import ACCOUNT_LIMIT, ADDRESS_LIMIT
from corral.panel.services import Panel, TenantRef
from tests.support.panel import (
    ORIGIN,
    PASSWORD,
    add_api_token,
    add_tenant,
    audit_entries,
    client_tls_context,
    grant,
    last_audit_id,
    login_form_token,
    make_app,
    open_session,
    quick_user,
    revoke_behind_the_panels_back,
    serve,
)
from tests.support.tls import make_pki

IDLE = 600.0
ABSOLUTE = 3600.0


class Clock:
    """The panel's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Site:
    app: Starlette
    panel: Panel
    a: TenantRef
    clock: Clock

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)

    def login(
        self, client: TestClient, name: str, password: str = PASSWORD, next_url: str = "/"
    ) -> httpx.Response:
        """POST the login form (with its token and the own Origin); the POST's answer.
        The form is fetched by a fresh client (a logged-in one is sent on to /)."""
        form = TestClient(self.app).get("/login")
        client.cookies.set("corral_login", form.cookies["corral_login"], path="/login")
        body = {
            "username": name,
            "password": password,
            "csrf_token": login_form_token(form.text),
            "next": next_url,
        }
        response: httpx.Response = client.post("/login", data=body, headers={"Origin": ORIGIN})
        return response

    def user(self, name: str, rights: tuple[str, ...] = ("access",)) -> int:
        user_id = quick_user(self.panel, name)
        grant(self.panel, user_id, self.a, rights)
        return user_id


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    app, panel = make_app(
        tmp_path / "panel",
        database_url,
        starter=NoAutostart(),
        allowed_hosts=("testserver",),
        session_idle_seconds=IDLE,
        session_absolute_seconds=ABSOLUTE,
        max_body_bytes=16 * 1024,
    )
    clock = Clock()
    panel.auth.clock = clock
    try:
        yield Site(app, panel, add_tenant(panel, "a", tmp_path / "a"), clock)
    finally:
        panel.database.close()


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """name -> {"value": ..., attribute (lower case): value} of each Set-Cookie header."""
    out: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        value, *attributes = rest.split(";")
        parsed = {"value": value}
        for attribute in attributes:
            key, _, val = attribute.strip().partition("=")
            parsed[key.lower()] = val
        out[name] = parsed
    return out


def session_cookie_of(site: Site, response: httpx.Response) -> str:
    cookies = set_cookies(response)
    assert site.panel.cookie_name in cookies, f"no session cookie in {list(cookies)}"
    return cookies[site.panel.cookie_name]["value"]


def as_cookie(site: Site, token: str) -> TestClient:
    client = site.client()
    client.cookies.set(site.panel.cookie_name, token)
    return client


def account_status(site: Site, token: str) -> int:
    status: int = as_cookie(site, token).get("/api/v1/account").status_code
    return status


# --- the cookie ----------------------------------------------------------------------------


def test_the_session_cookie_is_httponly_strict_and_host_wide(site: Site) -> None:
    client = site.client()
    form = client.get("/login")
    pre = set_cookies(form)["corral_login"]
    assert {"httponly", "samesite", "path"} <= set(pre)
    assert pre["samesite"].lower() == "strict" and pre["path"] == "/login"
    site.user("ann")
    response = site.login(client, "ann")
    assert response.status_code == 303
    cookies = set_cookies(response)
    session = cookies["corral_session"]  # without TLS: the plain name (no __Host-)
    assert "httponly" in session
    assert session["samesite"].lower() == "strict"
    assert session["path"] == "/"
    assert "domain" not in session
    assert "secure" not in session  # plain HTTP: a Secure cookie would never come back
    assert "corral_login" in cookies and cookies["corral_login"]["value"] in ('""', "")


def test_under_tls_the_cookie_is_secure_with_the_host_prefix(
    database_url: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    app, panel = make_app(
        tmp_path / "panel",
        database_url,
        starter=NoAutostart(),
        cert_file=pki.server_cert,
        key_file=pki.server_key,
    )
    try:
        quick_user(panel, "ann")
        with (
            serve(app, pki) as origin,
            httpx.Client(base_url=origin, verify=client_tls_context(pki), trust_env=False) as http,
        ):
            form = http.get("/login")
            assert form.status_code == 200
            assert "strict-transport-security" in form.headers
            assert "secure" in set_cookies(form)["corral_login"]
            response = http.post(
                "/login",
                data={
                    "username": "ann",
                    "password": PASSWORD,
                    "csrf_token": login_form_token(form.text),
                },
                headers={"Origin": origin},
            )
            assert response.status_code == 303, response.text
            cookies = set_cookies(response)
            assert "corral_session" not in cookies
            session = cookies["__Host-corral_session"]
            assert {"secure", "httponly"} <= set(session)
            assert session["samesite"].lower() == "strict"
            assert session["path"] == "/" and "domain" not in session  # what __Host- demands
            assert http.get("/api/v1/account").json()["username"] == "ann"
            with panel.database.session() as db:
                csrf = db.scalars(select(Session.csrf_token)).one()
            plain = origin.replace("https://", "http://")  # same host and port, not https
            forged = http.post("/logout", data={"csrf_token": csrf}, headers={"Origin": plain})
            assert forged.status_code == 403
            api = http.get("/api/v1/account")
            assert api.headers["strict-transport-security"].startswith("max-age=")
    finally:
        panel.database.close()


def test_a_session_id_is_never_kept_across_a_login(site: Site) -> None:
    """Session fixation: a cookie planted before the login (random, or the attacker's own
    live session) is replaced by a new id; the planted one gains nothing."""
    site.user("ann")
    mallory_id = site.user("mallory")
    mallory = open_session(site.panel, mallory_id).token
    for planted in ("planted-by-someone", mallory):
        client = site.client()
        client.cookies.set(site.panel.cookie_name, planted)
        response = site.login(client, "ann")
        issued = session_cookie_of(site, response)
        assert issued != planted
        assert account_status(site, issued) == 200
        assert as_cookie(site, issued).get("/api/v1/account").json()["username"] == "ann"
    assert account_status(site, "planted-by-someone") == 401
    assert as_cookie(site, mallory).get("/api/v1/account").json()["username"] == "mallory"
    again = session_cookie_of(site, site.login(site.client(), "ann"))
    assert again != issued, "each login makes a new id"


# --- time-outs -------------------------------------------------------------------------


def test_an_idle_session_ends(site: Site) -> None:
    site.user("ann")
    token = session_cookie_of(site, site.login(site.client(), "ann"))
    for _ in range(3):  # activity keeps it alive, well past one idle period
        site.clock.advance(IDLE - 10)
        assert account_status(site, token) == 200
    site.clock.advance(IDLE)
    assert account_status(site, token) == 401
    site.clock.advance(-IDLE)  # and it stays ended: the session row is gone
    assert account_status(site, token) == 401
    page = as_cookie(site, token).get("/t/a")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_a_session_ends_at_its_absolute_time_out_however_active(site: Site) -> None:
    site.user("ann")
    token = session_cookie_of(site, site.login(site.client(), "ann"))
    lived = 0.0
    while lived + IDLE / 2 < ABSOLUTE:
        site.clock.advance(IDLE / 2)
        lived += IDLE / 2
        assert account_status(site, token) == 200, f"ended after {lived:g} s"
    site.clock.advance(ABSOLUTE - lived)
    assert account_status(site, token) == 401


# --- logout and the permission cache ---------------------------------------------------


def test_logout_refuses_the_same_cookie_at_once(site: Site) -> None:
    """Within the 10 s the permission cache may hold a principal: logout drops it."""
    site.user("ann")
    client = site.client()
    token = session_cookie_of(site, site.login(client, "ann"))
    assert account_status(site, token) == 200  # cached now
    assert as_cookie(site, token).get("/t/a").status_code == 200
    with site.panel.database.session() as db:
        csrf = db.scalars(select(Session.csrf_token)).one()
    response = client.post("/logout", data={"csrf_token": csrf}, headers={"Origin": ORIGIN})
    assert response.status_code == 303
    assert account_status(site, token) == 401  # same clock instant: no cache expiry needed
    page = as_cookie(site, token).get("/t/a")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    with site.panel.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Session)) == 0


def test_changes_made_by_an_admin_apply_at_once(site: Site) -> None:
    """Grants taken or given (from the user's and the tenant's screens), a user disabled,
    an admin demoted: the admin actions drop the permission cache, so the very next
    request sees the change (no 10 s wait)."""
    ann = site.user("ann", ("access", "logs"))
    cookie = open_session(site.panel, ann)
    user = as_cookie(site, cookie.token)
    _, token = add_api_token(site.panel, ann)
    bearer = {"Authorization": f"Bearer {token}"}
    admin_id = quick_user(site.panel, "root", admin=True)
    admin_cookie = open_session(site.panel, admin_id)
    admin = as_cookie(site, admin_cookie.token)
    deputy_id = quick_user(site.panel, "deputy", admin=True)
    deputy = as_cookie(site, open_session(site.panel, deputy_id).token)
    headers = {"Origin": ORIGIN, "X-CSRF-Token": admin_cookie.csrf}
    assert user.get("/t/a").status_code == 200  # cached from here on
    assert site.client().get("/t/a", headers=bearer).status_code == 200
    assert deputy.get("/admin/users").status_code == 200

    removed = admin.put(f"/api/v1/users/{ann}/grants", json={"grants": {"a": []}}, headers=headers)
    assert removed.status_code == 200, removed.text
    assert user.get("/t/a").status_code == 404  # no grant left: the tenant is gone for her
    assert site.client().get("/t/a", headers=bearer).status_code == 404

    # the tenant's screens change grants too: given back (seen at once), taken again
    tenant_api = f"/api/v1/admin/tenants/{site.a.id}/grants"
    given = admin.patch(tenant_api, json={"grants": {"ann": ["access"]}}, headers=headers)
    assert given.status_code == 200, given.text
    assert user.get("/t/a").status_code == 200
    form = {"csrf_token": admin_cookie.csrf, f"u-{ann}": "1"}  # her row, no box ticked
    taken = admin.post(f"/admin/tenants/{site.a.id}/grants", data=form, headers={"Origin": ORIGIN})
    assert taken.status_code == 303, taken.text
    assert user.get("/t/a").status_code == 404

    disabled = admin.patch(f"/api/v1/users/{ann}", json={"disabled": True}, headers=headers)
    assert disabled.status_code == 200
    assert user.get("/api/v1/account").status_code == 401
    assert site.client().get("/api/v1/account", headers=bearer).status_code == 401

    demoted = admin.patch(f"/api/v1/users/{deputy_id}", json={"is_admin": False}, headers=headers)
    assert demoted.status_code == 200, demoted.text
    assert deputy.get("/admin/users").status_code == 404


def test_a_grant_removed_behind_the_panels_back_is_refused_within_10_s(site: Site) -> None:
    """No invalidation (a change straight in the database): the cached rights may be used
    until the cache expires (permission_cache_seconds = 10, SPEC 2.4), never longer."""
    ttl = site.panel.config.permission_cache_seconds
    assert ttl <= 10
    ann = site.user("ann")
    user = as_cookie(site, open_session(site.panel, ann).token)
    assert user.get("/t/a").status_code == 200  # the principal is cached now
    revoke_behind_the_panels_back(site.panel, ann, site.a)
    site.clock.advance(ttl / 2)
    assert user.get("/t/a").status_code == 200  # still the cached rights: allowed by SPEC
    site.clock.advance(ttl / 2)
    assert user.get("/t/a").status_code == 404  # 10 s after it was cached: refused


def test_a_clock_stepping_back_does_not_stretch_the_permission_cache(site: Site) -> None:
    """The wall clock can step back (NTP, a VM restored): the cached rights must not then
    look younger than they are and outlive the 10 s bound."""
    ann = site.user("ann")
    user = as_cookie(site, open_session(site.panel, ann).token)
    assert user.get("/t/a").status_code == 200  # cached at the current time
    revoke_behind_the_panels_back(site.panel, ann, site.a)
    site.clock.advance(-300)  # five minutes back: the cache entry seems to come from the future
    assert user.get("/t/a").status_code == 404


# --- logging in: throttling, audit, redirects ------------------------------------------


def test_failed_logins_are_audited(site: Site) -> None:
    site.user("ann")
    since = last_audit_id(site.panel)
    assert site.login(site.client(), "ann", "wrong password here").status_code == 401
    assert site.login(site.client(), "nobody", "wrong password here").status_code == 401
    entries = audit_entries(site.panel, since)
    assert [(e.action, e.result, e.actor) for e in entries] == [
        ("login", "failed", "anonymous"),
        ("login", "failed", "anonymous"),
    ]
    assert "ann" in entries[0].detail and "nobody" in entries[1].detail
    assert all(e.address == "testclient" and e.at > 0 for e in entries)
    assert "wrong password here" not in " ".join(e.detail for e in entries)


def test_an_account_is_throttled_after_the_policys_failures(site: Site) -> None:
    site.user("ann")
    site.user("bob")
    since = last_audit_id(site.panel)
    for _ in range(ACCOUNT_LIMIT):
        assert site.login(site.client(), "ann", "not her password").status_code == 401
    locked = site.login(site.client(), "ann")  # the right password, too late
    assert locked.status_code == 429
    assert site.panel.cookie_name not in set_cookies(locked)
    assert "try again in" in locked.text
    results = [(e.action, e.result) for e in audit_entries(site.panel, since)]
    assert results == [("login", "failed")] * ACCOUNT_LIMIT + [("login", "denied")]
    assert site.login(site.client(), "bob").status_code == 303  # others are not locked out


def test_an_address_is_throttled_after_the_policys_failures(site: Site) -> None:
    """ADDRESS_LIMIT failures from one address, over many accounts, lock the address.
    All but the last are recorded straight in the throttle (argon2 takes most of a second
    per login); the last goes through the login form."""
    site.user("ann")
    for n in range(ADDRESS_LIMIT - 1):
        site.panel.throttle.record_failure(f"guess{n}", "testclient")
    assert site.login(site.client(), "ann").status_code == 303  # still allowed
    since = last_audit_id(site.panel)
    assert site.login(site.client(), "guess-last", "wrong").status_code == 401
    locked = site.login(site.client(), "ann")  # another account, right password
    assert locked.status_code == 429
    results = [(e.action, e.result) for e in audit_entries(site.panel, since)]
    assert results == [("login", "failed"), ("login", "denied")]


def test_the_throttle_counts_the_peer_not_forwarded_headers(
    database_url: str, tmp_path: Path
) -> None:
    """Behind no proxy, X-Forwarded-For and friends are the client's own words: a locked
    address cannot unlock itself by naming another (a real uvicorn, as `corral panel`
    runs it)."""
    app, panel = make_app(tmp_path / "panel", database_url, starter=NoAutostart())
    try:
        quick_user(panel, "ann")
        for n in range(ADDRESS_LIMIT - 1):
            panel.throttle.record_failure(f"guess{n}", "127.0.0.1")
        with serve(app) as origin, httpx.Client(base_url=origin, trust_env=False) as http:

            def login(name: str, password: str, claimed: str) -> int:
                form = http.get("/login")
                body = {"username": name, "password": password}
                body["csrf_token"] = login_form_token(form.text)
                spoof = {"X-Forwarded-For": claimed, "X-Real-IP": claimed}
                spoof["Forwarded"] = f"for={claimed}"
                answer = http.post("/login", data=body, headers={"Origin": origin, **spoof})
                return answer.status_code

            since = last_audit_id(panel)
            assert login("guess-last", "wrong", "203.0.113.7") == 401
            assert login("ann", PASSWORD, "198.51.100.9") == 429
        addresses = {e.address for e in audit_entries(panel, since)}
        assert addresses == {"127.0.0.1"}
    finally:
        panel.database.close()


EVIL_NEXT = [
    "//evil.example/",
    "https://evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "http:evil.example",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_url", EVIL_NEXT)
def test_the_next_parameter_never_leaves_the_panel(site: Site, next_url: str) -> None:
    """A link to /login?next=<elsewhere>: after logging in, the browser stays here."""
    site.user("ann")
    client = site.client()
    form = client.get("/login", params={"next": next_url})
    shown = re.search(r'name="next" value="([^"]*)"', form.text)
    assert shown is not None
    response = client.post(
        "/login",
        data={
            "username": "ann",
            "password": PASSWORD,
            "csrf_token": login_form_token(form.text),
            "next": html.unescape(shown.group(1)),
        },
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 303
    assert _stays_here(response.headers["location"]), response.headers["location"]
    forged = site.login(site.client(), "ann", next_url=next_url)  # `next` posted as is
    assert _stays_here(forged.headers["location"]), forged.headers["location"]


def test_a_local_next_is_followed(site: Site) -> None:
    site.user("ann")
    response = site.login(site.client(), "ann", next_url="/t/a?x=1")
    assert response.headers["location"] == "/t/a?x=1"


def _stays_here(location: str) -> bool:
    """Where a browser would go: tabs and newlines dropped, backslashes read as slashes."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    target = urlsplit(urljoin("http://testserver/login", cleaned))
    return target.scheme == "http" and target.netloc == "testserver"


# --- headers, sizes, hosts -------------------------------------------------------------


def _security_headers_ok(response: httpx.Response, what: str) -> None:
    headers = response.headers
    csp = headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", what
    assert directives.get("script-src") == "script-src 'self'", what
    assert "default-src" in directives and "object-src" in directives, what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer", "strict-origin"), what
    assert "strict-transport-security" not in headers, f"{what}: HSTS over plain HTTP"


def test_security_headers_on_pages_api_static_errors_and_redirects(site: Site) -> None:
    ann = site.user("ann")
    user = as_cookie(site, open_session(site.panel, ann).token)
    anonymous = site.client()
    answers = {
        "login page": anonymous.get("/login"),
        "page": user.get("/t/a"),
        "API": user.get("/api/v1/account"),
        "static": anonymous.get("/static/css/panel.css"),
        "404 page": user.get("/t/nosuch"),
        "401 API": anonymous.get("/api/v1/account"),
        "redirect": anonymous.get("/t/a"),
        "403 POST": user.post("/logout", headers={"Origin": "http://evil.example"}),
    }
    assert answers["static"].status_code == 200
    for what, response in answers.items():
        _security_headers_ok(response, what)
        if what != "static":
            assert response.headers.get("cache-control") == "no-store", what


def test_an_oversized_body_is_refused_and_nothing_is_saved(site: Site) -> None:
    ann = site.user("ann")
    cookie = open_session(site.panel, ann)
    user = as_cookie(site, cookie.token)
    headers = {"Origin": ORIGIN, "X-CSRF-Token": cookie.csrf}
    limit = site.panel.config.max_body_bytes
    big = "x" * (limit + 1)
    answers = [
        user.post("/api/v1/account/tokens", json={"name": "t", "pad": big}, headers=headers),
        user.post(
            "/account/tokens",
            data={"name": "t", "pad": big, "csrf_token": cookie.csrf},
            headers={"Origin": ORIGIN},
        ),
    ]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is found while reading
        yield b'{"name": "t", "pad": "'
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    answers.append(
        user.post(
            "/api/v1/account/tokens",
            content=chunks(),
            headers={**headers, "Content-Type": "application/json"},
        )
    )
    assert [a.status_code for a in answers] == [413, 413, 413]
    with site.panel.database.session() as db:
        assert db.scalar(select(func.count()).select_from(ApiToken)) == 0
    fits = user.post("/api/v1/account/tokens", json={"name": "t"}, headers=headers)
    assert fits.status_code == 201  # the same request, within the limit, works


def test_a_host_header_not_in_the_allowed_list_is_refused(site: Site) -> None:
    """DNS rebinding: evil.example resolving to the panel's address makes the browser
    send Host and Origin of evil.example, which agree; the Host check refuses them."""
    ann = site.user("ann")
    cookie = open_session(site.panel, ann)
    user = as_cookie(site, cookie.token)
    evil = "evil.example"
    assert user.get("/t/a", headers={"Host": evil}).status_code == 400
    assert user.get("/login", headers={"Host": evil}).status_code == 400
    response = user.post(
        "/api/v1/account/tokens",
        json={"name": "t"},
        headers={"Host": evil, "Origin": f"http://{evil}", "X-CSRF-Token": cookie.csrf},
    )
    assert response.status_code == 400
    with site.panel.database.session() as db:
        assert db.scalar(select(func.count()).select_from(ApiToken)) == 0
    assert user.get("/t/a").status_code == 200  # the allowed host


def test_the_default_allowed_hosts_are_loopback_names_only(tmp_path: Path) -> None:
    from corral.panel.config import PanelConfig

    hosts = set(PanelConfig(home=tmp_path).hosts())
    assert hosts <= {"127.0.0.1", "localhost", "[::1]"}
    assert "*" not in hosts
