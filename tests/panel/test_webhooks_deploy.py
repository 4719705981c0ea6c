"""A right webhook really deploys (SPEC 4, issue 10): a real repository served over HTTPS on
loopback, a real tenant daemon with a git app, the panel's public endpoint. Pushes to
another branch and wrong credentials start nothing; each format's deploy is recorded with
its trigger and the pushed commit."""

from __future__ import annotations

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
import yaml
from starlette.applications import Starlette
from starlette.testclient import TestClient

from corral.panel.db.models import DeployHook
from corral.panel.gateway import NoAutostart
from corral.panel.services import Panel, TenantRef
from corral.panel.webhooks import service
from tests.conftest import Corral, wait_for
from tests.support.gitrepos import GitRepo, git_https_server, make_repo
from tests.support.panel import SLEEPER, add_tenant, make_app, remove_dir, short_dir, tenant_daemon
from tests.support.tls import make_pki

FINISHED = ("succeeded", "failed")


@dataclass
class World:
    app: Starlette
    panel: Panel
    tenant: TenantRef
    corral: Corral
    repo: GitRepo
    issued: service.Issued

    def post(self, headers: dict[str, str], body: bytes = b"") -> httpx.Response:
        path = f"/hooks/deploy/{self.issued.public_id}"
        answer: httpx.Response = TestClient(self.app).post(path, headers=headers, content=body)
        return answer

    def history(self) -> list[dict[str, Any]]:
        return list(self.corral.call("deploy_history", app="web", limit=200))

    def finished(self, deploy_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            for record in self.history():
                if record["id"] == deploy_id and record["status"] in FINISHED:
                    return dict(record)
            return None

        return dict(wait_for(done, timeout=120, interval=0.1))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    homes = short_dir("cwd")
    with contextlib.ExitStack() as stack:
        stack.callback(remove_dir, homes)
        repo = make_repo(tmp_path / "git", {"app.py": SLEEPER, "version.txt": "1\n"})
        pki = make_pki(tmp_path / "pki")
        base = stack.enter_context(git_https_server(repo.served, pki))
        app, panel = make_app(
            tmp_path / "panel", starter=NoAutostart(), allowed_hosts=("testserver",)
        )
        stack.callback(panel.database.close)
        corral = stack.enter_context(tenant_daemon(homes / "a"))
        config = {
            "apps": [
                {
                    "name": "web",
                    "script": "app.py",
                    "env": {"GIT_SSL_CAINFO": str(pki.ca_cert)},
                    "git": {"repo": f"{base}/{repo.path}", "branch": "main", "install": False},
                }
            ]
        }
        path = corral.write("corral.yaml", yaml.safe_dump(config))
        corral.ok("start", str(path))
        tenant = add_tenant(panel, "a", homes / "a")
        issued = service.enable(panel, tenant, "web", "tester")
        yield World(app, panel, tenant, corral, repo, issued)


def _push(ref: str, after: str) -> bytes:
    return json.dumps({"ref": ref, "after": after, "commits": []}).encode()


def _github(token: str, body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


@pytest.mark.slow
def test_a_right_webhook_deploys_and_the_rest_start_nothing(world: World) -> None:
    token = world.issued.token
    head = world.repo.head()
    # Another branch: acknowledged, ignored; wrong credentials: refused. Nothing queued.
    other = _push("refs/heads/feature", head)
    assert world.post(_github(token, other, "d-other"), other).status_code == 202
    assert world.post({"X-Corral-Token": "wrong"}).status_code == 403
    main = _push("refs/heads/main", head)
    assert world.post(_github("wrong", main, "d-wrong"), main).status_code == 403
    tag = _push("refs/tags/v1", head)
    gitlab_tag = {"X-Gitlab-Token": token, "X-Gitlab-Event": "Push Hook"}
    assert world.post(gitlab_tag, tag).status_code == 202
    assert world.history() == []

    answer = world.post(_github(token, main, "d-1"), main)
    assert answer.status_code == 202, answer.text
    record = world.finished(answer.json()["deploy"])
    assert record["status"] == "succeeded", record
    assert record["trigger"] == "webhook: github" and record["commit"] == head
    wait_for(lambda: {r["status"] for r in world.corral.jlist()} == {"online"}, timeout=30)

    second = world.repo.commit({"version.txt": "2\n"}, "version 2")
    answer = world.post({"X-Corral-Token": token})
    assert answer.status_code == 202, answer.text
    record = world.finished(answer.json()["deploy"])
    assert (record["status"], record["trigger"], record["commit"]) == (
        "succeeded", "webhook", second,
    )  # fmt: skip

    third = world.repo.commit({"version.txt": "3\n"}, "version 3")
    body = _push("refs/heads/main", third)
    answer = world.post({"X-Gitlab-Token": token, "X-Gitlab-Event": "Push Hook"}, body)
    assert answer.status_code == 202, answer.text
    record = world.finished(answer.json()["deploy"])
    assert (record["status"], record["trigger"], record["commit"]) == (
        "succeeded", "webhook: gitlab", third,
    )  # fmt: skip
    assert len(world.history()) == 3
    current = world.corral.home.root / "deploys" / "web" / "current"
    assert (current / "version.txt").read_text() == "3\n"
    with world.panel.database.session() as db:
        row = db.get(DeployHook, 1)
        assert row is not None and row.last_used_at is not None
