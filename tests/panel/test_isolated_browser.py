"""Isolated mode in a real browser (issue 9): a real `corral helper` (root), a real `corral
panel --helper-socket` process run by its own system user on a loopback port, tenants that
are real system users made by the helper, and headless Chromium. Root only (it creates
system users); every user and process is removed at the end, even on failure.

An admin creates a tenant, then an app whose script sits in a 0700 folder of the tenant
(which the panel's uid cannot see), watches it come online in the live table, follows its
logs and stops it; a user holding only `access` on that tenant sees the app, live, with no
action buttons anywhere.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.panel.test_browser_flow import (
    CSP_WATCH,
    EXAMPLE_APP,
    assert_clean,
    row_of,
    second_tab,
    shot,
    submit_login,
)
from tests.support.browser import Tab
from tests.support.isolation import Isolated, isolated_panel, run_as
from tests.support.otheruid import can_switch_users, world_python

pytestmark = pytest.mark.slow

ADMIN = "boss"
ADMIN_PASSWORD = "the isolated admin's passphrase"
VIEWER = "vera"
VIEWER_PASSWORD = "vera only looks, never touches"


@dataclass(frozen=True)
class IsoServer:
    base: str
    iso: Isolated

    def url(self, path: str) -> str:
        return self.base + path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _panel_command(iso: Isolated, *args: str) -> list[str]:
    return ["-m", "corral", "panel", *args, "--home", str(iso.panel_home)]


def _wait_until_serving(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(base + "/healthz", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the panel did not start:\n{log.read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def serving(iso: Isolated) -> Iterator[str]:
    """`corral panel` in isolated mode, run by the panel's user; stopped at the end."""
    made = run_as(
        iso.panel,
        _panel_command(iso, "create-admin", ADMIN, "--password-stdin"),
        ADMIN_PASSWORD,
        home=iso.panel_home,
    )
    assert made.returncode == 0, made.stderr
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = iso.panel_home / "server.log"
    command = [str(world_python()), *_panel_command(iso, "serve", "--port", str(port))]
    command += ["--helper-socket", str(iso.socket)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            user=iso.panel.pw_uid,
            group=iso.panel.pw_gid,
            extra_groups=[],
            cwd="/",
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "HOME": str(iso.panel_home),
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_serving(proc, base, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def server() -> Iterator[IsoServer]:
    why = can_switch_users()
    if why is not None:
        pytest.skip(why)
    with isolated_panel() as iso, serving(iso) as base:
        yield IsoServer(base, iso)


@pytest.fixture
def tab(tab: Tab) -> Tab:
    """conftest's tab, with CSP violations reported as console errors."""
    tab.context.add_init_script(CSP_WATCH)
    return tab


def private_script(home: Path, user: pwd.struct_passwd) -> None:
    """app/hello.py (EXAMPLE_APP) in a folder only the tenant may enter (0700)."""
    private = home / "app"
    private.mkdir(mode=0o700)
    os.chown(private, user.pw_uid, user.pw_gid)
    private.chmod(0o700)
    script = private / "hello.py"
    script.write_text(EXAMPLE_APP)
    os.chown(script, user.pw_uid, user.pw_gid)
    script.chmod(0o600)


def say(home: Path, user: pwd.struct_passwd, text: str) -> None:
    """Make the example app print `said: <text>` (written whole, readable by the tenant)."""
    part = home / "say.txt.part"
    part.write_text(text)
    os.chown(part, user.pw_uid, user.pw_gid)
    part.replace(home / "say.txt")


def log_in(page: Page, server: IsoServer, name: str, password: str) -> None:
    page.goto(server.url("/login"))
    submit_login(page, name, password)
    expect(page.locator("nav.user .me")).to_have_text(name)


def create_tenant(page: Page, server: IsoServer, name: str) -> None:
    page.locator("nav.user").get_by_role("link", name="Tenants").click()
    page.wait_for_url(server.url("/admin/tenants"))
    expect(page.locator("[data-mode=isolated]")).to_contain_text("Isolated mode")
    page.locator("#f-name").fill(name)
    page.locator("#f-app_limit").fill("2")
    page.get_by_role("button", name="Create tenant").click()
    page.wait_for_url(re.compile(r".*/admin/tenants/\d+\?done=tenant-created"))


def grant_access(page: Page, server: IsoServer, tenant: str) -> None:
    """The Users screen: a new user, with `access` (only) on the tenant."""
    page.locator("nav.user").get_by_role("link", name="Users").click()
    page.wait_for_url(server.url("/admin/users"))
    page.locator("#f-username").fill(VIEWER)
    page.locator("#f-password").fill(VIEWER_PASSWORD)
    page.get_by_role("button", name="Create user").click()
    page.wait_for_url(re.compile(r".*/admin/users/\d+\?done=user-created"))
    grants = page.locator("tr[data-grant-row]", has_text=tenant)
    grants.get_by_label(f"access on {tenant}").check()
    page.get_by_role("button", name="Save grants").click()
    expect(page.locator(".flash")).to_contain_text("grants were saved")
    expect(grants.get_by_label(f"access on {tenant}")).to_be_checked()
    for right in ("control", "logs", "manage"):
        expect(grants.get_by_label(f"{right} on {tenant}")).not_to_be_checked()


def test_an_app_in_a_private_folder_lives_in_the_browser_and_a_viewer_only_looks(
    server: IsoServer, tab: Tab, browser: Browser
) -> None:
    iso = server.iso
    page = tab.page
    log_in(page, server, ADMIN, ADMIN_PASSWORD)
    name = iso.name()
    create_tenant(page, server, name)
    user = pwd.getpwnam(name)
    home = iso.tenants_dir / name
    private_script(home, user)
    seen = iso.as_panel(["-c", f"import os; print(os.path.exists({str(home / 'app')!r}))"])
    assert seen.stdout.strip() == "True"
    seen = iso.as_panel(["-c", f"print(__import__('os').access({str(home / 'app')!r}, 1))"])
    assert seen.stdout.strip() == "False"  # the panel's uid cannot enter app/

    # The process table, open in a second page, shows the new app without a reload.
    table = tab.context.new_page()
    table.goto(server.url(f"/t/{name}"))
    expect(table.locator("[data-live]")).to_have_attribute("data-live", "live")
    table.evaluate("window.notReloaded = true")

    page.goto(server.url(f"/t/{name}/apps/new"))
    page.locator("#f-name").fill("web")
    page.locator("#f-cwd").fill("app")
    page.locator("#f-script").fill("hello.py")
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url(server.url(f"/t/{name}/apps/web"))
    expect(page.locator(".flash")).to_contain_text("Created web")
    expect(page.locator(".statusbar [data-field=status]")).to_have_text("online")
    row = row_of(table, "web")
    expect(row.locator("[data-field=status]")).to_have_text("online")
    assert table.evaluate("window.notReloaded") is True
    shot(tab, table, "isolated-process-table")
    pid = int(page.locator("tbody[data-instances] td.mono").first.inner_text())
    app = psutil.Process(pid)
    assert app.uids().real == user.pw_uid  # the tenant's app, its uid

    # Its logs, followed: a line printed after the page opened shows up.
    page.locator("nav.tabs").get_by_role("link", name="Logs").click()
    page.wait_for_url(server.url(f"/t/{name}/apps/web/logs"))
    expect(page.locator("[data-state]")).to_have_attribute("data-state", "live")
    expect(page.locator("pre.logs .ln", has_text="hello #").first).to_be_visible()
    say(home, user, "words from a private folder")
    expect(page.locator("pre.logs .ln", has_text="said: words from a private")).to_have_count(1)
    tab.screenshot("isolated-logs-following")

    grant_access(page, server, name)
    with second_tab(browser, tab.screenshots / VIEWER) as viewer:
        vpage = viewer.page
        vpage.goto(server.url("/login"))
        submit_login(vpage, VIEWER, VIEWER_PASSWORD)
        vpage.wait_for_url(server.url(f"/t/{name}"))  # the only tenant: straight there
        expect(vpage.locator("[data-live]")).to_have_attribute("data-live", "live")
        vrow = row_of(vpage, "web")
        expect(vrow.locator("[data-field=status]")).to_have_text("online")
        expect(vrow.locator("button")).to_have_count(0)
        expect(vpage.locator("main button:enabled, main a.button")).to_have_count(0)
        viewer.screenshot("isolated-viewer")

        # The admin stops it on the app page: both live tables turn "stopped" by
        # themselves; the viewer still has no button.
        page.goto(server.url(f"/t/{name}/apps/web"))
        page.locator(".statusbar").get_by_role("button", name="Stop").click()
        expect(page.locator(".statusbar [data-field=status]")).to_have_text("stopped")
        expect(row.locator("[data-field=status]")).to_have_text("stopped")
        expect(vrow.locator("[data-field=status]")).to_have_text("stopped")
        expect(vrow.locator("button")).to_have_count(0)
        vrow.get_by_role("link", name="web").click()
        vpage.wait_for_url(server.url(f"/t/{name}/apps/web"))
        expect(vpage.locator(".statusbar [data-field=status]")).to_have_text("stopped")
        expect(vpage.locator("main form button")).to_have_count(0)
        expect(vpage.locator("nav.tabs a")).to_have_text(["Overview"])  # no logs right
        assert_clean(viewer.watch)
    assert not app.is_running()  # psutil compares start times: never a reused pid
    assert table.evaluate("window.notReloaded") is True
    assert_clean(tab.watch)
