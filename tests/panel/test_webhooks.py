"""Deploy webhooks (SPEC 4, issue 10): managing them, and the public endpoint's refusals.

A real panel (TestClient), a real tenant daemon with a real app, real tokens; the deploy
itself is the daemon's (tests/panel/test_webhooks_deploy.py deploys a real repository).
Here the app has no git source, so a right token reaches the daemon's `deploy`, which
refuses it with `invalid_argument`: proof that the request went through.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.panel.db.models import Base, DeployHook
from corral.panel.gateway import NoAutostart
from corral.panel.services import Panel, TenantRef
from corral.panel.webhooks import service
from corral.panel.webhooks.cipher import HookCipher
from corral.panel.webhooks.endpoint import DENIED_BODY, MAX_BODY_BYTES
from corral.panel.webhooks.limiter import DeliveryMemory, RateLimiter
from corral.panel.webhooks.service import HookState
from tests.conftest import Corral
from tests.support.panel import (
    ORIGIN,
    Cookie,
    add_tenant,
    audit_entries,
    client_with,
    grant,
    last_audit_id,
    make_app,
    open_session,
    quick_user,
    remove_dir,
    short_dir,
    start_app,
    submit,
    tenant_daemon,
)

APP = "web"
API = f"/api/v1/tenants/a/apps/{APP}/webhook"
PAGE = f"/t/a/apps/{APP}/webhook"


@dataclass
class World:
    app: Starlette
    panel: Panel
    tenant: TenantRef
    corral: Corral
    manager: Cookie
    """A user with `manage` on tenant a (and `access`)."""
    viewer: Cookie
    """A user with `access` and `control` only."""
    home: Path

    def client(self, cookie: Cookie | None = None) -> TestClient:
        return client_with(self.app, cookie)

    def api(self, verb: str, cookie: Cookie | None = None) -> httpx.Response:
        who = cookie or self.manager
        path = API if verb == "" else f"{API}/{verb}"
        method = "GET" if verb == "" else "POST"
        headers = {"Origin": ORIGIN} if method == "POST" else {}
        return submit(
            self.client(who), method, path, api=True, csrf=who.csrf if method == "POST" else None,
            headers=headers,
        )  # fmt: skip

    def issue(self) -> service.Issued:
        """A fresh hook for the app (any old one removed): its id and token."""
        with contextlib.suppress(service.HookError):
            service.disable(self.panel, self.tenant, APP)
        return service.enable(self.panel, self.tenant, APP, "tester")

    def fresh_limits(self, **kwargs: Any) -> HookState:
        """New rate limits and replay memory (every test starts with full buckets)."""
        state = HookState(service.state_of(self.panel).cipher, **kwargs)
        service.install_state(self.panel, state)
        return state


def make_world(folder: Path, url: str) -> Iterator[World]:
    homes = short_dir("cwh")
    with contextlib.ExitStack() as stack:
        stack.callback(remove_dir, homes)
        app, panel = make_app(
            folder / "panel", url, starter=NoAutostart(), allowed_hosts=("testserver",)
        )
        stack.callback(panel.database.close)
        corral = stack.enter_context(tenant_daemon(homes / "a"))
        start_app(corral, APP)
        tenant = add_tenant(panel, "a", homes / "a")
        manager = quick_user(panel, "manager")
        grant(panel, manager, tenant, ["access", "manage"])
        viewer = quick_user(panel, "viewer")
        grant(panel, viewer, tenant, ["access", "control", "logs"])
        yield World(
            app, panel, tenant, corral, open_session(panel, manager),
            open_session(panel, viewer), homes / "a",
        )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("webhooks")
    yield from make_world(folder, f"sqlite:///{folder / 'panel.db'}")


@pytest.fixture
def w(world: World) -> World:
    world.fresh_limits()
    return world


def hook(world: World, hook_id: str, *, method: str = "POST", query: str = "",
         headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:  # fmt: skip
    path = f"/hooks/deploy/{hook_id}" + (f"?{query}" if query else "")
    answer: httpx.Response = TestClient(world.app).request(
        method, path, headers=headers or {}, content=body
    )
    return answer


def github_headers(
    token: str, body: bytes, *, event: str = "push", delivery: str
) -> dict[str, str]:
    signature = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


def push(ref: str = "refs/heads/main") -> bytes:
    return json.dumps({"ref": ref, "after": "0" * 40}).encode()


def hook_entries(world: World, since: int) -> list[Any]:
    return [e for e in audit_entries(world.panel, since) if e.action == "webhook:deploy"]


def forms_of(token: str) -> list[str]:
    """The token and every other way it could be written down."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return [
        token,
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b32encode(raw).decode().rstrip("="),
    ]


# --- managing a webhook ---------------------------------------------------------------------


def test_a_new_token_is_32_random_bytes_shown_once_and_only_its_hash_is_stored(
    tmp_path: Path, database_url: str
) -> None:
    """Enable, rotate: the token is in that one answer; then every table of the database
    (and for SQLite the file's bytes) holds neither the token nor its hex or base64 forms,
    only its SHA-256; the sealed copy opens only with the key file."""
    for world in make_world(tmp_path, database_url):
        tokens = []
        answer = world.api("enable")
        assert answer.status_code == 201, answer.text
        tokens.append(answer.json()["webhook"]["token"])
        answer = world.api("rotate")
        assert answer.status_code == 200, answer.text
        tokens.append(answer.json()["webhook"]["token"])
        for token in tokens:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            assert len(raw) == 32
        assert tokens[0] != tokens[1]
        shown = world.api("")
        assert shown.status_code == 200 and shown.json()["webhook"]["token"] is None
        assert shown.json()["webhook"]["enabled"] is True
        dump = []
        with world.panel.database.engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                for row in connection.execute(table.select()):
                    dump.append(repr(tuple(row)))
        dumped = "\n".join(dump)
        for token in tokens:
            for form in forms_of(token):
                assert form not in dumped, "a form of the token is in the database"
        assert hashlib.sha256(tokens[1].encode()).hexdigest() in dumped
        if database_url.startswith("sqlite:///"):
            world.panel.database.engine.dispose()
            files = Path(database_url.removeprefix("sqlite:///")).parent.glob("panel.db*")
            raw_bytes = b"".join(f.read_bytes() for f in files)
            for token in tokens:
                for form in forms_of(token):
                    assert form.encode() not in raw_bytes
        key_file = world.panel.config.home / "webhook.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        with world.panel.database.session() as db:
            kept = db.scalar(select(DeployHook))
            assert kept is not None
            assert HookCipher(key_file).open(kept.signing_key, kept.public_id) == tokens[1]
            assert HookCipher(key_file).open(kept.signing_key, "another-id") is None
            other = tmp_path / "other.key"
            assert HookCipher(other).open(kept.signing_key, kept.public_id) is None


def test_enable_rotate_disable_through_the_api_are_audited(w: World) -> None:
    with contextlib.suppress(service.HookError):
        service.disable(w.panel, w.tenant, APP)
    since = last_audit_id(w.panel)
    first = w.api("enable")
    assert first.status_code == 201
    again = w.api("enable")
    assert again.status_code == 409 and "already enabled" in again.json()["error"]
    old = first.json()["webhook"]
    rotated = w.api("rotate").json()["webhook"]
    assert rotated["public_id"] == old["public_id"] and rotated["path"] == old["path"]
    assert rotated["rotated_at"] is not None
    assert hook(w, old["public_id"], headers={"X-Corral-Token": old["token"]}).status_code == 403
    gone = w.api("disable")
    assert gone.status_code == 200 and gone.json()["webhook"]["enabled"] is False
    after = hook(w, old["public_id"], headers={"X-Corral-Token": rotated["token"]})
    assert after.status_code == 403 and after.json() == DENIED_BODY
    assert w.api("disable").status_code == 404
    assert w.api("rotate").status_code == 404
    actions = [(e.action, e.result, e.app, e.actor) for e in audit_entries(w.panel, since)]
    assert [a for a in actions if a[0].startswith("webhook:") and a[0] != "webhook:deploy"] == [
        ("webhook:enable", "ok", APP, "manager"),
        ("webhook:enable", "failed", APP, "manager"),
        ("webhook:rotate", "ok", APP, "manager"),
        ("webhook:disable", "ok", APP, "manager"),
        ("webhook:disable", "failed", APP, "manager"),
        ("webhook:rotate", "failed", APP, "manager"),
    ]
    for entry in audit_entries(w.panel, since):
        for token in (old["token"], rotated["token"]):
            assert token not in entry.detail


def test_enabling_needs_an_existing_app(w: World) -> None:
    answer = submit(
        w.client(w.manager), "POST", "/api/v1/tenants/a/apps/nosuchapp/webhook/enable",
        api=True, csrf=w.manager.csrf, headers={"Origin": ORIGIN},
    )  # fmt: skip
    assert answer.status_code == 404
    with w.panel.database.session() as db:
        assert db.scalar(select(DeployHook).where(DeployHook.app == "nosuchapp")) is None


def test_management_needs_manage_and_the_csrf_token(w: World) -> None:
    w.issue()
    for verb in ("", "enable", "rotate", "disable"):
        assert w.api(verb, w.viewer).status_code == 403, verb
    client = w.client(w.manager)
    no_token = client.post(f"{API}/rotate", headers={"Origin": ORIGIN})
    assert no_token.status_code == 403
    foreign = client.post(
        f"{API}/rotate", headers={"Origin": "http://evil.example", "X-CSRF-Token": w.manager.csrf}
    )
    assert foreign.status_code == 403


def test_the_page_shows_the_token_once_with_instructions(w: World) -> None:
    with contextlib.suppress(service.HookError):
        service.disable(w.panel, w.tenant, APP)
    client = w.client(w.manager)
    page = submit(client, "POST", f"{PAGE}/enable", api=False, csrf=w.manager.csrf,
                  headers={"Origin": ORIGIN})  # fmt: skip
    assert page.status_code == 200, page.text
    token = page.text.split('<code class="mono token" data-copy>')[1].split("<")[0]
    assert len(token) == 43 and page.text.count(token) == 1
    assert "X-Hub-Signature-256" not in page.text  # instructions, not headers, for people
    assert "GitHub" in page.text and "GitLab" in page.text and "X-Corral-Token" in page.text
    view = service.webhook_view(w.panel, w.tenant, APP)
    assert view["enabled"] and view["token"] is None
    assert view["path"] in page.text
    html = w.panel.templates.env.get_template("_webhook.html").render(
        webhook=view, csrf_token="x", request=None
    )
    assert token not in html and "/rotate" in html and "/disable" in html
    rotated = submit(client, "POST", f"{PAGE}/rotate", api=False, csrf=w.manager.csrf,
                     headers={"Origin": ORIGIN})  # fmt: skip
    assert rotated.status_code == 200 and token not in rotated.text
    gone = submit(client, "POST", f"{PAGE}/disable", api=False, csrf=w.manager.csrf,
                  headers={"Origin": ORIGIN})  # fmt: skip
    assert gone.status_code == 303
    assert gone.headers["location"] == f"/t/a/apps/{APP}/deploy"
    off = w.panel.templates.env.get_template("_webhook.html").render(
        webhook=service.webhook_view(w.panel, w.tenant, APP), csrf_token="x", request=None
    )
    assert "/enable" in off and "Enable webhook" in off


# --- the public endpoint: refusals ------------------------------------------------------------


def test_an_unknown_hook_and_a_wrong_token_get_the_same_answer(w: World) -> None:
    issued = w.issue()
    since = last_audit_id(w.panel)
    unknown_id = "A" * len(issued.public_id)
    answers = [
        hook(w, issued.public_id, headers={"X-Corral-Token": "x" * 43}),
        hook(w, unknown_id, headers={"X-Corral-Token": issued.token}),
        hook(
            w, issued.public_id, headers={"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Push Hook"}
        ),
        hook(w, unknown_id, headers={"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Push Hook"}),
        hook(
            w, issued.public_id, body=push(), headers=github_headers("wrong", push(), delivery="d1")
        ),
        hook(w, unknown_id, body=push(), headers=github_headers("wrong", push(), delivery="d2")),
    ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (403, DENIED_BODY)
        assert answer.headers["content-length"] == answers[0].headers["content-length"]
        assert sorted(answer.headers) == sorted(answers[0].headers)
    entries = hook_entries(w, since)
    assert [(e.result, e.tenant, e.app) for e in entries] == [
        ("denied", "a", APP), ("denied", None, None)
    ] * 3  # fmt: skip
    assert [e.detail.split(": ", 1)[1] for e in entries] == [
        "wrong token", "unknown hook", "wrong token", "unknown hook", "wrong signature",
        "unknown hook",
    ]  # fmt: skip
    assert all(e.actor == "webhook" and e.address == "testclient" for e in entries)
    assert not any(issued.token in e.detail for e in entries)


def test_an_unknown_hook_costs_the_same_work_as_a_wrong_token(w: World) -> None:
    """Same queries, same unseal for GitHub, same compare: counted, not timed."""
    issued = w.issue()

    class CountingCipher(HookCipher):
        opened = 0

        def open(self, text: str, public_id: str) -> str | None:
            CountingCipher.opened += 1
            return super().open(text, public_id)

    state = w.fresh_limits()
    state.cipher = CountingCipher(state.cipher.key_file)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]).split("WHERE")[0])

    event.listen(w.panel.database.engine, "before_cursor_execute", count)
    try:
        work = {}
        for name, hook_id in (("known", issued.public_id), ("unknown", "B" * 24)):
            for headers in (
                {"X-Corral-Token": "wrong"},
                github_headers("wrong", push(), delivery=f"x-{name}"),
            ):
                statements.clear()
                CountingCipher.opened = 0
                creds = service.verify_credentials(headers)
                checked = service.check_delivery(w.panel, hook_id, creds, push())
                assert not checked.ok
                work[(name, creds.format)] = (list(statements), CountingCipher.opened)
    finally:
        event.remove(w.panel.database.engine, "before_cursor_execute", count)
    assert work[("known", "generic")] == work[("unknown", "generic")]
    assert work[("known", "github")] == work[("unknown", "github")]
    assert work[("known", "github")][1] == 1 and work[("known", "generic")][1] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_any_method_but_post_is_405_and_audited(w: World, method: str) -> None:
    issued = w.issue()
    since = last_audit_id(w.panel)
    answer = hook(w, issued.public_id, method=method, headers={"X-Corral-Token": issued.token})
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    (entry,) = hook_entries(w, since)
    assert entry.result == "denied" and f"method {method} refused" in entry.detail


def test_a_token_in_the_query_string_is_refused_and_never_recorded(w: World) -> None:
    issued = w.issue()
    since = last_audit_id(w.panel)
    for query in (f"token={issued.token}", f"X-Corral-Token={issued.token}", issued.token):
        answer = hook(w, issued.public_id, query=query, headers={"X-Corral-Token": issued.token})
        assert answer.status_code == 400 and "header" in answer.json()["error"]
        assert issued.token not in answer.text
    entries = hook_entries(w, since)
    assert len(entries) == 3 and all(e.result == "denied" for e in entries)
    assert not any(issued.token in f"{e.detail} {e.app} {e.tenant}" for e in entries)
    with w.panel.database.engine.connect() as connection:
        audit = " ".join(map(repr, connection.execute(text("SELECT * FROM audit_log"))))
    for form in forms_of(issued.token):
        assert form not in audit


def test_missing_or_malformed_credentials_are_401(w: World) -> None:
    issued = w.issue()
    for headers in (
        {},
        {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d"},
        {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d", "X-Hub-Signature-256": "sha1=00"},
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64},
    ):
        answer = hook(w, issued.public_id, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"]


def test_a_body_over_the_limit_is_413(w: World) -> None:
    issued = w.issue()
    since = last_audit_id(w.panel)
    big = b"x" * (MAX_BODY_BYTES + 1)
    answer = hook(w, issued.public_id, body=big, headers={"X-Corral-Token": issued.token})
    assert answer.status_code == 413
    (entry,) = hook_entries(w, since)
    assert entry.result == "denied"


def test_github_signature_replay_and_ping(w: World) -> None:
    issued = w.issue()
    since = last_audit_id(w.panel)
    ping = hook(w, issued.public_id, body=b'{"zen": "x"}',
                headers=github_headers(issued.token, b'{"zen": "x"}', event="ping",
                                       delivery="ping-1"))  # fmt: skip
    assert ping.status_code == 200 and ping.json()["event"] == "ping"
    signed = github_headers(issued.token, push(), delivery="push-1")
    # The signature of one body on another body: refused like a wrong token.
    other = hook(w, issued.public_id, body=push("refs/heads/evil"), headers=signed)
    assert (other.status_code, other.json()) == (403, DENIED_BODY)
    first = hook(w, issued.public_id, body=push(), headers=signed)
    assert first.status_code == 409 and "git" in first.json()["error"]  # reached the daemon
    replay = hook(w, issued.public_id, body=push(), headers=signed)
    assert replay.status_code == 409 and "already received" in replay.json()["error"]
    issues = github_headers(issued.token, b"{}", event="issues", delivery="i-1")
    issue = hook(w, issued.public_id, body=b"{}", headers=issues)
    assert issue.status_code == 202 and "not a push" in issue.json()["ignored"]
    results = [(e.result, e.detail.split(": ", 1)[1][:20]) for e in hook_entries(w, since)]
    assert results[0] == ("ok", "ping answered")
    assert results[1] == ("denied", "wrong signature")
    assert results[2][0] == "failed"
    assert results[3] == ("denied", "replayed 'push-1'")
    assert results[4][0] == "ok"


def test_a_right_token_asks_the_daemon_to_deploy(w: World) -> None:
    """The app has no git source: the daemon's `deploy` refuses it (invalid_argument),
    which the endpoint passes on as 409 and audits as failed."""
    issued = w.issue()
    since = last_audit_id(w.panel)
    for headers, body in (
        ({"X-Corral-Token": issued.token}, b""),
        ({"X-Gitlab-Token": issued.token, "X-Gitlab-Event": "Push Hook",
          "Content-Type": "application/json"}, push()),
    ):  # fmt: skip
        answer = hook(w, issued.public_id, headers=headers, body=body)
        assert answer.status_code == 409, answer.text
        assert "git" in answer.json()["error"]
    entries = hook_entries(w, since)
    assert [(e.result, e.tenant, e.app) for e in entries] == [("failed", "a", APP)] * 2
    not_push = hook(w, issued.public_id, headers={"X-Gitlab-Token": issued.token,
                                                  "X-Gitlab-Event": "Tag Push Hook"})  # fmt: skip
    assert not_push.status_code == 202


def test_malformed_push_bodies_are_400(w: World) -> None:
    issued = w.issue()
    gitlab = {"X-Gitlab-Token": issued.token, "X-Gitlab-Event": "Push Hook"}
    for body in (b"not json", b"[1]", b'{"ref": 5}', b"{}"):
        answer = hook(w, issued.public_id, headers=gitlab, body=body)
        assert answer.status_code == 400, body


# --- rate limits --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_per_hook_gives_429_with_retry_after(w: World) -> None:
    issued = w.issue()
    clock = FakeClock()
    w.fresh_limits(
        by_address=RateLimiter(100, 60.0, clock=clock), by_hook=RateLimiter(3, 6.0, clock=clock)
    )
    since = last_audit_id(w.panel)
    statuses = [
        hook(w, issued.public_id, headers={"X-Corral-Token": "wrong"}).status_code for _ in range(5)
    ]
    assert statuses == [403, 403, 403, 429, 429]
    limited = hook(w, issued.public_id, headers={"X-Corral-Token": issued.token})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "10"
    # another hook id is not limited by this one's bucket
    assert hook(w, "C" * 24, headers={"X-Corral-Token": "x"}).status_code == 403
    clock.now += 10
    assert hook(w, issued.public_id, headers={"X-Corral-Token": "w"}).status_code == 403
    entries = hook_entries(w, since)
    limited_entries = [e for e in entries if "rate limited" in e.detail]
    assert len(limited_entries) == 1, "one entry per limited spell, not one per request"
    assert len(entries) == 3 + 1 + 1 + 1


def test_the_rate_limit_per_address_spans_hooks(w: World) -> None:
    clock = FakeClock()
    w.fresh_limits(
        by_address=RateLimiter(4, 30.0, clock=clock), by_hook=RateLimiter(100, 60.0, clock=clock)
    )
    statuses = [
        hook(w, f"hook{i:020d}", headers={"X-Corral-Token": "x"}).status_code for i in range(6)
    ]
    assert statuses == [403, 403, 403, 403, 429, 429]
    clock.now += 2
    assert hook(w, "D" * 24, headers={"X-Corral-Token": "x"}).status_code == 403


def test_limiter_and_delivery_memory_units() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, max_keys=2)
    assert [limiter.take("a").admitted for _ in range(3)] == [True, True, False]
    assert limiter.take("a").first_refusal is False
    clock.now += 1.0
    assert limiter.take("a").admitted
    limiter.take("b")
    limiter.take("c")  # "a" is dropped: the least recently used
    assert limiter.take("a").admitted
    memory = DeliveryMemory(keep_seconds=60, clock=clock)
    assert memory.first_time("h", "d") and not memory.first_time("h", "d")
    assert memory.first_time("other", "d")
    clock.now += 61
    assert memory.first_time("h", "d")


def test_removing_a_tenant_removes_its_hooks(tmp_path: Path) -> None:
    """The hooks go with their tenant (ON DELETE CASCADE): a later tenant of the same name
    never inherits a URL and token."""
    app, panel = make_app(tmp_path / "panel", starter=NoAutostart(), allowed_hosts=("testserver",))
    try:
        tenant = add_tenant(panel, "gone", tmp_path / "gone")
        issued = service.enable(panel, tenant, "web", "tester")
        with panel.database.session() as db:
            db.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant.id})
        with panel.database.session() as db:
            assert db.scalar(select(DeployHook)) is None
        answer = TestClient(app).post(
            f"/hooks/deploy/{issued.public_id}", headers={"X-Corral-Token": issued.token}
        )
        assert (answer.status_code, answer.json()) == (403, DENIED_BODY)
    finally:
        panel.database.close()


def test_deleting_an_app_removes_its_hook(w: World) -> None:
    """A later app of the same name must not inherit the URL and the token."""
    start_app(w.corral, "brief")
    issued = service.enable(w.panel, w.tenant, "brief", "tester")
    answer = submit(
        w.client(w.manager), "POST", "/api/v1/tenants/a/apps/brief/delete", api=True,
        csrf=w.manager.csrf, headers={"Origin": ORIGIN},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.json()["deleted"] == ["brief"]
    assert service.webhook_view(w.panel, w.tenant, "brief")["enabled"] is False
    start_app(w.corral, "brief")  # the same name again
    try:
        again = hook(w, issued.public_id, headers={"X-Corral-Token": issued.token})
        assert (again.status_code, again.json()) == (403, DENIED_BODY)
    finally:
        w.corral.call("delete", target="brief")


def test_the_view_gives_the_full_url_when_the_public_origin_is_known(tmp_path: Path) -> None:
    _app, panel = make_app(
        tmp_path / "panel", starter=NoAutostart(), public_origin="https://panel.example.com/"
    )
    try:
        tenant = add_tenant(panel, "t", tmp_path / "t")
        assert service.webhook_view(panel, tenant, "web")["enabled"] is False
        issued = service.enable(panel, tenant, "web", "tester")
        view = service.webhook_view(panel, tenant, "web", issued)
        assert view["url"] == f"https://panel.example.com/hooks/deploy/{issued.public_id}"
        assert view["token"] == issued.token
        assert service.webhook_view(panel, tenant, "web")["token"] is None
    finally:
        panel.database.close()


def test_a_daemon_that_cannot_be_reached_is_503_and_the_delivery_may_come_again(
    w: World,
) -> None:
    """The panel's own failure: audited as failed, and GitHub's redelivery is not a replay."""
    down = add_tenant(w.panel, "down", w.home.parent / "down")  # no daemon runs there
    issued = service.enable(w.panel, down, "down", "tester")
    since = last_audit_id(w.panel)
    headers = github_headers(issued.token, push(), delivery="again")
    for _ in range(2):
        answer = hook(w, issued.public_id, body=push(), headers=headers)
        assert answer.status_code == 503, answer.text
    entries = hook_entries(w, since)
    assert [(e.result, e.tenant, e.app) for e in entries] == [("failed", "down", "down")] * 2
