"""The hub's UI in real Chromium: log in, see two servers arrive live, trigger a restart
that the agent runs, see an alert."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from corral.hub.alerts import add_rule, deliver_all, run_alerts
from tests.hub.support import (
    PASSWORD,
    ProtocolAgent,
    add_bucket,
    add_user,
    agent_connection,
    app_body,
    keys_of,
    make_hub,
    metrics_body,
)
from tests.support.browser import Tab
from tests.support.panel import serve


@contextlib.contextmanager
def running_agent(url: str, agent: ProtocolAgent, memory: int) -> Iterator[None]:
    """The agent connected in its own thread and loop: metrics every 0.5 s, and every
    action answered as the real agent would. Stopped at the end."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        async with agent_connection(url, agent):
            body = metrics_body(agent.hostname, [app_body("api", memory=memory)])
            await agent.send_metrics(body)
            ready.set()

            async def answer() -> None:
                while True:
                    await agent.answer_one_action()

            answering = asyncio.ensure_future(answer())
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                    await agent.send_metrics(body)
            finally:
                answering.cancel()
                with contextlib.suppress(BaseException):
                    await answering

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(15), "the agent did not connect"
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()


@pytest.mark.slow
def test_log_in_two_servers_restart_and_alert(tmp_path: Path, tab: Tab) -> None:
    app, hub = make_hub(tmp_path)
    add_user(hub, "olive")
    bucket = add_bucket(hub, "prod", "olive")
    with hub.database.session() as db:
        add_rule(db, bucket.id, "memory", "100", "300")
    page = tab.page
    with serve(app) as origin:
        url = origin.replace("http://", "ws://") + "/agent/v1"
        first = ProtocolAgent(keys_of(bucket), "web-1")
        second = ProtocolAgent(keys_of(bucket), "web-2")
        with running_agent(url, first, 50 << 20):
            page.goto(origin + "/")
            page.fill("input[name=username]", "olive")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.click(f"a[href='/b/{bucket.public_id}']")
            expect(page.locator("section.server h2 a")).to_have_text(["web-1"])
            with running_agent(url, second, 300 << 20):
                # Arrives without a reload: the page's live stream refreshes it.
                expect(page.locator("section.server h2 a")).to_have_text(["web-1", "web-2"])
                tab.screenshot("two servers")
                page.click("text=web-1")
                page.select_option("select[name=verb]", "restart")
                page.fill("#action-form input[name=target]", "api")
                page.click("#action-form button[type=submit]")
                expect(page).to_have_url(f"{origin}/b/{bucket.public_id}/actions")
                row = page.locator("tr[data-action]").first
                expect(row.locator("td.state")).to_have_text("ok")
                for _, changes in run_alerts(hub.database):
                    deliver_all(hub.database, changes)
                page.click("text=Alerts")
                expect(page.locator("tr.alert.firing")).to_contain_text("api on web-2 uses 300 MiB")
                tab.screenshot("alert")
    assert [r["ok"] for r in first.results] == [True]
    assert second.results == []
    # A live refresh (fetch of the page being shown) cut short by the next navigation is
    # the browser's normal behaviour; anything else is a problem.
    problems = [
        p for p in tab.watch.problems() if not re.fullmatch(r"GET \S+ failed: net::ERR_ABORTED", p)
    ]
    assert problems == []
