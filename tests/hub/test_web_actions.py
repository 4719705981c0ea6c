"""Remote actions from the hub's pages, end to end over real sockets: a developer's
restart, a stop with the agent password (proof derived and the password dropped), a
viewer refused; the password ends up in no table and no log line."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from corral.hub.db.models import Action, Server
from corral.hub.roles import Role
from corral.protocol.hub import make_verifier
from corral.protocol.hub.proof import PasswordParams
from tests.hub.support import (
    AGENT_PASSWORD,
    PASSWORD,
    ProtocolAgent,
    add_bucket,
    add_user,
    agent_connection,
    app_body,
    await_until,
    dump_tables,
    grant,
    keys_of,
    make_hub,
    metrics_body,
)
from tests.support.panel import serve

FAST = PasswordParams(b"fedcba9876543210", time_cost=1, memory_cost=8192, parallelism=1)


async def _login(client: httpx.AsyncClient, name: str) -> str:
    response = await client.post("/login", data={"username": name, "password": PASSWORD})
    assert response.status_code == 303
    page = await client.get("/")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found[1]


def test_actions_from_the_pages(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, hub = make_hub(tmp_path, database_url)
    add_user(hub, "olive")
    dev = add_user(hub, "dev")
    viewer = add_user(hub, "vic")
    bucket = add_bucket(hub, "prod", "olive")
    grant(hub, dev, bucket.id, Role.DEVELOPER)
    grant(hub, viewer, bucket.id, Role.VIEWER)
    agent = ProtocolAgent(keys_of(bucket), "web-1", verifier=make_verifier(AGENT_PASSWORD, FAST))

    def server_pk() -> int | None:
        with hub.database.session() as db:
            return db.scalar(select(Server.id).where(Server.connected.is_(True)))

    def states() -> list[tuple[str, str, bool]]:
        with hub.database.session() as db:
            rows = db.scalars(select(Action).order_by(Action.created_at)).all()
            return [(a.verb, a.state, a.with_proof) for a in rows]

    async def scenario(origin: str) -> None:
        url = origin.replace("http://", "ws://") + "/agent/v1"
        headers = {"Origin": origin}
        async with (
            agent_connection(url, agent),
            httpx.AsyncClient(base_url=origin, headers=headers) as client,
        ):
            await agent.send_metrics(metrics_body("web-1", [app_body("api")]))
            pk = await await_until(server_pk)
            path = f"/b/{bucket.public_id}/servers/{pk}/actions"
            # A viewer: 403, nothing sent.
            csrf = await _login(client, "vic")
            response = await client.post(
                path, data={"csrf_token": csrf, "verb": "restart", "target": "api"}
            )
            assert response.status_code == 403
            client.cookies.clear()
            csrf = await _login(client, "dev")
            page = await client.get(f"/b/{bucket.public_id}/servers/{pk}")
            assert "web-1" in page.text and "api" in page.text
            form = {"csrf_token": csrf, "verb": "restart", "target": "api"}
            posted = asyncio.ensure_future(client.post(path, data=form))
            await agent.answer_one_action()
            assert (await posted).status_code == 303
            form = {"csrf_token": csrf, "verb": "stop", "target": "api", "password": ""}
            refused = await client.post(path, data=form)
            assert refused.status_code == 422
            assert "needs the agent password" in refused.text
            form["password"] = AGENT_PASSWORD
            posted = asyncio.ensure_future(client.post(path, data=form))
            action = await agent.answer_one_action()
            assert action["proof"] is not None
            assert (await posted).status_code == 303
            await await_until(lambda: [s for s in states() if s[1] == "sent"] == [])
            log = await client.get(f"/b/{bucket.public_id}/actions")
            assert "proof given" in log.text

    with serve(app) as origin:
        asyncio.run(scenario(origin))
    assert states() == [("restart", "ok", False), ("stop", "ok", True)]
    assert [r["ok"] for r in agent.results] == [True, True]
    assert AGENT_PASSWORD not in dump_tables(hub)
    assert bucket.secret not in dump_tables(hub)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "stop api by dev" in logged  # the hub logs every action...
    assert AGENT_PASSWORD not in logged  # ...and never the password
