"""A hub user's password change (current password required, CSRF and Origin checked,
wrong guesses throttled, other sessions ended) and the audit-log pages (hub admins see
everything; a bucket's owners see their bucket's entries only)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from corral.hub.db.models import AuditEntry, User
from corral.hub.roles import Role
from corral.panel.security.throttle import ACCOUNT_LIMIT
from tests.hub.support import PASSWORD, add_bucket, add_user, grant, make_hub

ORIGIN = "http://testserver"
NEW = "a brand new pass phrase 7"


def _login(client: TestClient, name: str, password: str = PASSWORD) -> int:
    response = client.post("/login", data={"username": name, "password": password},
                           headers={"Origin": ORIGIN}, follow_redirects=False)  # fmt: skip
    return int(response.status_code)


def _csrf(client: TestClient) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").text)
    assert found
    return found[1]


@pytest.fixture
def hub_app(tmp_path: Path) -> Iterator[tuple[Any, Any, ExitStack]]:
    app, hub = make_hub(tmp_path)
    with ExitStack() as stack:
        yield app, hub, stack


def _client(stack: ExitStack, app: Any) -> TestClient:
    return stack.enter_context(TestClient(app, base_url=ORIGIN))


def test_password_change(hub_app: tuple[Any, Any, ExitStack]) -> None:
    app, hub, stack = hub_app
    add_user(hub, "olive")
    here, elsewhere = _client(stack, app), _client(stack, app)
    assert _login(here, "olive") == 303 and _login(elsewhere, "olive") == 303
    csrf = _csrf(here)
    form = {"csrf_token": csrf, "current_password": PASSWORD, "new_password": NEW,
            "new_password_again": NEW}  # fmt: skip

    def post(data: dict[str, str], origin: str = ORIGIN) -> Any:
        return here.post("/account/password", data=data, headers={"Origin": origin},
                         follow_redirects=False)  # fmt: skip

    # CSRF and Origin, as every state change.
    assert post({**form, "csrf_token": "forged"}).status_code == 403
    assert post(form, origin="http://evil.example").status_code == 403
    # The current password is required; bad new ones are refused with the reason.
    wrong = post({**form, "current_password": "not my password at all"})
    assert wrong.status_code == 422 and "not your current password" in wrong.text
    assert post({**form, "new_password_again": NEW + "x"}).status_code == 422
    short = post({**form, "new_password": "short", "new_password_again": "short"})
    assert short.status_code == 422 and "new password" in short.text
    same = post({**form, "new_password": PASSWORD, "new_password_again": PASSWORD})
    assert same.status_code == 422
    # Nothing changed so far: the other session still works.
    assert elsewhere.get("/api/buckets").status_code == 200
    done = post(form)
    assert done.status_code == 303 and done.headers["location"] == "/account?changed=1"
    assert "other sessions were ended" in here.get("/account?changed=1").text
    assert here.get("/api/buckets").status_code == 200  # this session goes on
    assert elsewhere.get("/api/buckets").status_code == 401  # the other one is over
    with hub.database.session() as db:
        user = db.scalar(select(User).where(User.username == "olive"))
        assert user is not None and user.password_hash.startswith("$argon2id$")
        assert NEW not in user.password_hash
        actions = db.scalars(select(AuditEntry.result).where(
            AuditEntry.action == "account.password")).all()  # fmt: skip
        assert "ok" in actions and "failed" in actions
    fresh = _client(stack, app)
    assert _login(fresh, "olive") == 401 and _login(fresh, "olive", NEW) == 303
    # The JSON twin, and wrong current passwords throttled like failed logins.
    api = {"X-CSRF-Token": _csrf(fresh), "Origin": ORIGIN}
    body = {"current_password": "wrong wrong wrong", "new_password": PASSWORD}
    codes = [fresh.post("/api/account/password", json=body, headers=api).status_code
             for _ in range(ACCOUNT_LIMIT)]  # fmt: skip
    assert codes == [422] * ACCOUNT_LIMIT
    body["current_password"] = NEW
    assert fresh.post("/api/account/password", json=body, headers=api).status_code == 429


def test_audit_log_pages(hub_app: tuple[Any, Any, ExitStack]) -> None:
    app, hub, stack = hub_app
    users = {name: add_user(hub, name, admin=name == "root") for name in
             ("olive", "vera", "eve", "root")}  # fmt: skip
    a = add_bucket(hub, "alpha", "olive")
    b = add_bucket(hub, "beta", "eve")
    grant(hub, users["vera"], a.id, Role.ADMIN)
    clients = {name: _client(stack, app) for name in users}
    for name, client in clients.items():
        assert _login(client, name) == 303
    # Something audited in each bucket.
    for name, bucket, kind in (("olive", a, "memory"), ("eve", b, "silent")):
        client = clients[name]
        headers = {"Origin": ORIGIN, "X-CSRF-Token": _csrf(client)}
        body = {"kind": kind, "threshold": "5"}
        response = client.post(
            f"/api/b/{bucket.public_id}/alerts/rules", json=body, headers=headers
        )
        assert response.status_code == 200

    def entries(name: str, path: str) -> tuple[int, list[dict[str, Any]]]:
        response = clients[name].get(path)
        return response.status_code, response.json().get("entries", [])

    status, seen = entries("olive", f"/api/b/{a.public_id}/audit")
    assert status == 200 and seen
    assert {e["bucket"] for e in seen} == {a.public_id}
    assert "eve" not in {e["actor"] for e in seen}
    page = clients["olive"].get(f"/b/{a.public_id}/audit")
    assert page.status_code == 200 and "alert.rule" in page.text and b.public_id not in page.text
    # Another bucket's owner sees nothing of bucket A, not even that it exists.
    assert entries("eve", f"/api/b/{a.public_id}/audit")[0] == 404
    assert clients["eve"].get(f"/b/{a.public_id}/audit").status_code == 404
    status, hers = entries("eve", f"/api/b/{b.public_id}/audit")
    assert status == 200 and {e["bucket"] for e in hers} == {b.public_id}
    assert a.public_id not in clients["eve"].get(f"/b/{b.public_id}/audit").text
    # A bucket admin below owner, and a non-admin on the hub-wide log: refused.
    assert entries("vera", f"/api/b/{a.public_id}/audit")[0] == 403
    assert entries("olive", "/api/audit")[0] == 403
    assert clients["olive"].get("/audit").status_code == 403
    # A hub administrator sees every bucket's entries and the logins.
    status, everything = entries("root", "/api/audit")
    assert status == 200
    assert {a.public_id, b.public_id, None} <= {e["bucket"] for e in everything}
    assert "login" in clients["root"].get("/audit").text
