"""A user's own account: password, two-factor codes (with a real authenticator's codes
from pyotp), personal API tokens and sessions.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from corral.panel.db.models import ApiToken, AuditEntry, Session, User
from tests.support.panel import PASSWORD, Client, add_user, make_app

NEW_PASSWORD = "a brand new passphrase"


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.db_file = tmp_path / "panel" / "panel.db"
        self.app, self.panel = make_app(tmp_path / "panel", allowed_hosts=("testserver",))
        self.bob_id = add_user(self.panel, "bob")

    def client(self, name: str = "bob", password: str = PASSWORD, code: str = "") -> Client:
        client = Client(self.app)
        assert client.login(name, password, code) == 303
        return client

    def rows(self, model: Any, *where: Any) -> list[Any]:
        with self.panel.database.session() as db:
            return list(db.scalars(select(model).where(*where)))

    def user(self) -> User:
        with self.panel.database.session() as db:
            user = db.get(User, self.bob_id)
            assert user is not None
            return user

    def audit(self, action: str) -> list[tuple[str, str]]:
        return [(e.result, e.detail) for e in self.rows(AuditEntry, AuditEntry.action == action)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def bob(world: World) -> Client:
    return world.client()


def test_the_account_page_and_api(world: World, bob: Client) -> None:
    page = bob.get("/account")
    assert page.status_code == 200
    for section in ("Password", "Two-factor codes", "API tokens", "Sessions"):
        assert f">{section}</h2>" in page.text
    assert "this session" in page.text
    me = bob.get("/api/v1/account").json()
    assert me["username"] == "bob" and me["is_admin"] is False and me["totp"] is False
    assert TestClient(world.app).get("/api/v1/account").status_code == 401


# --- password ---------------------------------------------------------------------------


def test_changing_the_password_checks_the_current_one_and_the_policy(
    world: World, bob: Client
) -> None:
    wrong = bob.post(
        "/account/password",
        {
            "current_password": "not it at all",
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    assert wrong.status_code == 422 and "this is not your current password" in wrong.text
    weak = bob.post(
        "/account/password",
        {"current_password": "", "new_password": "short", "new_password_again": "short"},
    )
    assert weak.status_code == 422
    assert "enter your current password" in weak.text and "at least 12 characters" in weak.text
    differ = bob.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": "x"},
    )
    assert differ.status_code == 422 and "the two new passwords differ" in differ.text
    api = bob.api("POST", "/api/v1/account/password", {"current_password": PASSWORD})
    assert api.status_code == 422 and "new_password" in api.json()["errors"]
    assert world.client(password=PASSWORD)  # still the old password
    assert [r for r, _ in world.audit("account.password")] == ["failed"] * 4


def test_a_new_password_ends_the_other_sessions_but_not_this_one(world: World, bob: Client) -> None:
    elsewhere = world.client()
    changed = bob.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/account?done=password"
    assert "your other sessions were ended" in bob.get("/account?done=password").text
    assert elsewhere.get("/api/v1/account").status_code == 401
    assert len(world.rows(Session, Session.user_id == world.bob_id)) == 1
    assert Client(world.app).login("bob", PASSWORD) == 401
    assert Client(world.app).login("bob", NEW_PASSWORD) == 303
    [(result, detail)] = world.audit("account.password")
    assert result == "ok" and detail == "ended 1 other session(s)"


# --- two-factor codes -------------------------------------------------------------------


def _setup(bob: Client) -> tuple[str, str]:
    """Start the TOTP setup on the page: (secret, setup_token) as the page shows them."""
    page = bob.post("/account/totp/setup")
    assert page.status_code == 200
    secret = re.search(r'name="secret" value="([A-Z2-7]{32})"', page.text)
    token = re.search(r'name="setup_token" value="([^"]+)"', page.text)
    assert secret and token
    assert f"otpauth://totp/corral:bob?secret={secret[1]}" in page.text  # the URI, as text
    assert "<img" not in page.text and "<canvas" not in page.text
    return secret[1], token[1]


def test_totp_is_turned_on_only_after_a_correct_code(world: World, bob: Client) -> None:
    secret, token = _setup(bob)
    assert world.user().totp_secret is None  # showing the secret changes nothing
    wrong = bob.post("/account/totp/enable", {"secret": secret, "setup_token": token, "code": "0"})
    assert wrong.status_code == 422 and "wrong code" in wrong.text
    assert secret in wrong.text  # the same setup stays on screen
    assert world.user().totp_secret is None
    other = pyotp.random_base32()
    forged = bob.post(
        "/account/totp/enable",
        {"secret": other, "setup_token": token, "code": pyotp.TOTP(other).now()},
    )
    assert forged.status_code == 422 and "expired or was altered" in forged.text
    ok = bob.post(
        "/account/totp/enable",
        {"secret": secret, "setup_token": token, "code": pyotp.TOTP(secret).now()},
    )
    assert ok.status_code == 303
    assert world.user().totp_secret == secret
    assert bob.get("/api/v1/account").json()["totp"] is True
    assert [r for r, _ in world.audit("account.totp_on")] == ["failed", "failed", "ok"]


def test_logging_in_with_totp_and_a_replayed_code_is_refused(world: World, bob: Client) -> None:
    secret, token = _setup(bob)
    totp = pyotp.TOTP(secret)
    bob.post("/account/totp/enable", {"secret": secret, "setup_token": token, "code": totp.now()})
    assert Client(world.app).login("bob") == 401  # no code
    assert Client(world.app).login("bob", code="000000") == 401
    # The confirming code's step is used up; the next step's code (one step of drift is
    # accepted) logs in once, and never again.
    code = totp.at(time.time() + 30)
    assert Client(world.app).login("bob", code=code) == 303
    assert Client(world.app).login("bob", code=code) == 401
    assert world.user().totp_last_step is not None


def test_turning_totp_off_needs_a_valid_code(world: World, bob: Client) -> None:
    secret, token = _setup(bob)
    totp = pyotp.TOTP(secret)
    enable_code = totp.now()
    bob.post("/account/totp/enable", {"secret": secret, "setup_token": token, "code": enable_code})
    page = bob.get("/account").text
    assert "Turn off two-factor codes" in page and secret not in page
    assert bob.post("/account/totp/disable", {"code": "123"}).status_code == 422
    replay = bob.api("POST", "/api/v1/account/totp/disable", {"code": enable_code})
    assert replay.status_code == 422 and "already used" in replay.json()["errors"]["code"]
    off = bob.api("POST", "/api/v1/account/totp/disable", {"code": totp.at(time.time() + 30)})
    assert off.status_code == 200 and off.json() == {"totp": False}
    assert world.user().totp_secret is None
    assert Client(world.app).login("bob") == 303


def test_totp_through_the_api(world: World, bob: Client) -> None:
    setup = bob.api("POST", "/api/v1/account/totp/setup").json()
    assert setup["uri"].startswith("otpauth://totp/corral:bob?secret=")
    code = pyotp.TOTP(setup["secret"]).now()
    on = bob.api("POST", "/api/v1/account/totp/enable", {**setup, "code": code})
    assert on.status_code == 200 and on.json() == {"totp": True}
    again = bob.api("POST", "/api/v1/account/totp/setup")
    assert again.status_code == 422 and "already on" in again.json()["errors"]["totp"]


# --- API tokens -------------------------------------------------------------------------


def test_an_api_token_is_shown_once_and_only_its_hash_is_stored(world: World, bob: Client) -> None:
    page = bob.post("/account/tokens", {"name": "deploy bot", "expires_in_days": "30"})
    assert page.status_code == 200
    found = re.search(r"(crl_[A-Za-z0-9_-]{40,})", page.text)
    assert found, "the new token is on the page"
    token = found[1]
    assert token not in bob.get("/account").text  # never again
    [row] = world.rows(ApiToken, ApiToken.user_id == world.bob_id)
    assert row.name == "deploy bot"
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.expires_at is not None and 29 * 86400 < row.expires_at - row.created_at <= 30 * 86400
    # Not in any column, nor anywhere in the database files.
    for path in world.db_file.parent.glob("panel.db*"):
        assert token.encode() not in path.read_bytes()
    assert token not in str(world.rows(AuditEntry))


def test_an_api_token_authenticates_and_stops_at_once_when_revoked(
    world: World, bob: Client
) -> None:
    made = bob.api("POST", "/api/v1/account/tokens", {"name": "ci"})
    assert made.status_code == 201
    token, info = made.json()["token"], made.json()["info"]
    anon = TestClient(world.app)
    bearer = {"Authorization": f"Bearer {token}"}
    me = anon.get("/api/v1/account", headers=bearer)
    assert me.status_code == 200 and me.json()["username"] == "bob"
    # With a token there is no cookie to forge: no CSRF token or Origin is needed.
    second = anon.post("/api/v1/account/tokens", json={"name": "second"}, headers=bearer)
    assert second.status_code == 201
    listed = bob.get("/api/v1/account/tokens").json()["tokens"]
    assert [t["name"] for t in listed] == ["second", "ci"]
    assert listed[1]["last_used_at"] is not None and "token" not in listed[1]
    assert bob.api("DELETE", f"/api/v1/account/tokens/{info['id']}").status_code == 200
    assert anon.get("/api/v1/account", headers=bearer).status_code == 401
    assert (
        anon.get("/api/v1/account", headers={"Authorization": "Bearer crl_nope"}).status_code == 401
    )
    assert [r for r, _ in world.audit("token.revoke")] == ["ok"]


def test_tokens_of_others_are_not_found_and_expired_tokens_refused(
    world: World, bob: Client
) -> None:
    add_user(world.panel, "carol")
    carol = world.client("carol")
    made = carol.api("POST", "/api/v1/account/tokens", {"name": "mine", "expires_in_days": 1})
    token_id = made.json()["info"]["id"]
    assert bob.api("DELETE", f"/api/v1/account/tokens/{token_id}").status_code == 404
    assert bob.post(f"/account/tokens/{token_id}/revoke").status_code == 404
    assert len(world.rows(ApiToken, ApiToken.id == token_id)) == 1
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert TestClient(world.app).get("/api/v1/account", headers=bearer).status_code == 200
    with world.panel.database.session() as db:
        row = db.get(ApiToken, token_id)
        assert row is not None
        row.expires_at = time.time() - 1
    assert TestClient(world.app).get("/api/v1/account", headers=bearer).status_code == 401
    assert "expired" in carol.get("/account").text
    assert carol.post(f"/account/tokens/{token_id}/revoke").status_code == 303
    assert world.rows(ApiToken) == []


def test_token_fields_are_validated(world: World, bob: Client) -> None:
    page = bob.post("/account/tokens", {"name": "", "expires_in_days": "soon"})
    assert page.status_code == 422
    assert "give the token a name" in page.text and "whole number of days" in page.text
    bad = bob.api("POST", "/api/v1/account/tokens", {"name": "x" * 65, "expires_in_days": 0})
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"name", "expires_in_days"}
    assert bob.api("POST", "/api/v1/account/tokens", {"name": "ci"}).status_code == 201
    dup = bob.api("POST", "/api/v1/account/tokens", {"name": "ci"})
    assert dup.status_code == 422 and "already have a token" in dup.json()["errors"]["name"]
    never = bob.api("POST", "/api/v1/account/tokens", {"name": "forever", "expires_in_days": None})
    assert never.json()["info"]["expires_at"] is None
    assert [r for r, _ in world.audit("token.create")] == ["failed", "failed", "ok", "failed", "ok"]


# --- sessions ---------------------------------------------------------------------------


def test_sessions_are_listed_and_can_be_ended(world: World, bob: Client) -> None:
    other = world.client()
    sessions = bob.get("/api/v1/account/sessions").json()["sessions"]
    assert len(sessions) == 2 and sorted(s["current"] for s in sessions) == [False, True]
    assert all(s["address"] == "testclient" for s in sessions)
    foreign = next(s for s in sessions if not s["current"])
    page = bob.get("/account").text
    assert f"/account/sessions/{foreign['id']}/end" in page
    assert bob.post(f"/account/sessions/{foreign['id']}/end").status_code == 303
    assert other.get("/api/v1/account").status_code == 401
    assert bob.post("/account/sessions/0123456789abcdef/end").status_code == 404
    [mine] = bob.get("/api/v1/account/sessions").json()["sessions"]
    ended = bob.api("DELETE", f"/api/v1/account/sessions/{mine['id']}")
    assert ended.json() == {"ended": mine["id"], "current": True}
    assert bob.get("/api/v1/account").status_code == 401
    assert [r for r, _ in world.audit("session.end")] == ["ok", "failed", "ok"]


def test_another_users_session_cannot_be_ended(world: World, bob: Client) -> None:
    add_user(world.panel, "carol")
    carol = world.client("carol")
    [theirs] = carol.get("/api/v1/account/sessions").json()["sessions"]
    assert bob.api("DELETE", f"/api/v1/account/sessions/{theirs['id']}").status_code == 404
    assert carol.get("/api/v1/account").status_code == 200
