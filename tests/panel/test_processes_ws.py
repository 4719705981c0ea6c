"""The process table's WebSocket (/t/{tenant}/ws/processes): it pushes the tenant's apps,
grouped, whenever the daemon reports an event and at least every 2 s.

A stream never waits forever here: the server pushes at least every 2 s, so each wait
below is bounded by a number of messages, not by a clock.
"""

# ruff: noqa: F811  (the fixtures imported from test_apps are used as parameters)
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from corral.panel.routes.tenants import _watch_events
from tests.panel.test_apps import (  # noqa: F401
    SLEEPER,
    Site,
    SiteFactory,
    make_site,
    site,
    tenant_corral,
)
from tests.support.panel import ORIGIN, add_user, login

PATH = "/t/acme/ws/processes"
MAX_MESSAGES = 40


def connect(site: Site) -> Any:
    return site.client.websocket_connect(PATH, headers={"Origin": ORIGIN})


def until(ws: WebSocketTestSession, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first pushed message for which `predicate` holds."""
    seen = []
    for _ in range(MAX_MESSAGES):
        message: dict[str, Any] = ws.receive_json()
        if predicate(message):
            return message
        seen.append(message)
    raise AssertionError(f"no such message in {MAX_MESSAGES}: last {seen[-1]}")


def app_in(message: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((a for a in message.get("apps", []) if a["name"] == name), None)


def status_of(name: str, status: str) -> Callable[[dict[str, Any]], bool]:
    def check(message: dict[str, Any]) -> bool:
        app = app_in(message, name)
        return app is not None and app["status"] == status

    return check


def test_a_started_app_is_pushed_online(site: Site) -> None:
    site.create("web", instances=2)
    site.corral.call("stop", target="web")
    with connect(site) as ws:
        first = until(ws, status_of("web", "stopped"))
        assert (first["tenant"], first["count"], first["limit"]) == ("acme", 1, -1)
        site.corral.call("start", target="web")  # behind the panel's back: only events tell
        pushed = until(ws, status_of("web", "online"))
    web = app_in(pushed, "web")
    assert web is not None
    assert web["label"] == "online" and web["instances"] == 2 and web["exec_mode"] == "fork"
    assert [m["status"] for m in web["members"]] == ["online", "online"]
    assert all(isinstance(m["pid"], int) for m in web["members"])
    assert web["uptime"] is not None and web["restarts"] == 0
    assert set(web) >= {"cpu", "memory", "id"}


def test_new_scaled_and_deleted_apps_are_pushed(site: Site) -> None:
    with connect(site) as ws:
        assert until(ws, lambda m: "apps" in m)["apps"] == []
        site.create("web")
        until(ws, status_of("web", "online"))
        scaled = site.api("POST", "/api/v1/tenants/acme/apps/web/scale", {"count": "+1"})
        assert scaled.status_code == 200
        until(ws, lambda m: (app_in(m, "web") or {}).get("instances") == 2)
        stopped = site.api("POST", "/api/v1/tenants/acme/apps/web/stop")
        assert stopped.status_code == 200
        until(ws, status_of("web", "stopped"))
        site.api("POST", "/api/v1/tenants/acme/apps/web/delete")
        gone = until(ws, lambda m: "apps" in m and app_in(m, "web") is None)
    assert gone["count"] == 0


def test_a_daemon_that_is_down_is_said_so(site: Site) -> None:
    site.corral.shutdown()  # the panel never starts one here (NoAutostart)
    with connect(site) as ws:
        message = ws.receive_json()
    # A stopped daemon is a state, not a broken stream: said as a notice, nothing started.
    assert message["apps"] == [] and "not running" in message["notice"]
    assert "error" not in message
    assert "daemon is not running" in site.client.get("/t/acme").text
    assert not site.corral.home.socket.exists()


def test_a_user_with_access_streams_and_a_stranger_is_refused(make_site: SiteFactory) -> None:
    site = make_site(rights=("access",))
    site.corral.start_app("web", SLEEPER)
    with connect(site) as ws:
        assert app_in(until(ws, lambda m: "apps" in m), "web") is not None
    add_user(site.panel, "eve")  # no grant on acme: the tenant does not exist for her
    stranger = TestClient(site.client.app)
    login(stranger, "eve")
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        stranger.websocket_connect(PATH, headers={"Origin": ORIGIN}) as ws,
    ):
        ws.receive_json()
    assert refused.value.code == 4404


def test_daemon_events_wake_the_stream(site: Site) -> None:
    site.create("web")
    seen: list[dict[str, Any] | None] = []

    async def main() -> None:
        woken = asyncio.Event()

        def wake(event: dict[str, Any] | None) -> None:
            seen.append(event)
            woken.set()

        watcher = asyncio.ensure_future(_watch_events(site.panel, site.tenant, wake))
        try:
            # The subscription starts in a thread: restart until its events come through.
            for _ in range(20):
                await asyncio.to_thread(site.corral.call, "restart", target="web")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=5)
                    if any(e and e.get("type") == "transition" for e in seen):
                        return
                woken.clear()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    asyncio.run(main())
    assert None not in seen  # the subscription never failed
    transitions = [e for e in seen if e and e.get("type") == "transition"]
    assert transitions and {e["name"] for e in transitions} == {"web"}
