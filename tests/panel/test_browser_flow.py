"""The panel end to end, as people use it (issue 7, "How it is shown"): a real `corral panel`
process on a loopback port, tenants' daemons it starts itself, headless Chromium.

The server is set up the way an operator does it: `corral panel create-admin`, `corral
panel add-tenant`, then `corral panel --home ... --port N`. One server per module (per
xdist worker); each test makes the apps and users it needs, under names of its own, so
the tests run in any order. Every page is checked for console errors, CSP violations,
failed requests and unexpected HTTP errors. Screenshots go to each test's tmp_path.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from corral.panel.db.engine import Database
from corral.panel.security.throttle import ACCOUNT_LIMIT
from corral.panel.settings import set_setting
from corral.paths import Home
from corral.protocol.client import ControlClient
from tests.support.browser import PageWatch, Tab, open_tab
from tests.support.panel import stop_daemons

pytestmark = pytest.mark.slow

ADMIN = "root"
ADMIN_PASSWORD = "a long admin passphrase"
USER_PASSWORD = "lou's own long passphrase"
PANEL = [sys.executable, "-m", "corral", "panel"]
EXAMPLE_APP = '''\
"""An example app: a greeting a second, and what say.txt (next to app/) holds whenever it
changes after the start, so a test can make it print a line at a moment of its choosing."""
import os
import pathlib
import time

say = pathlib.Path(__file__).resolve().parent.parent / "say.txt"
greeting = os.environ.get("GREETING", "hello")
said = say.read_text() if say.exists() else ""
for n in range(10**9):
    text = say.read_text() if say.exists() else ""
    if text and text != said:
        print(f"said: {text}", flush=True)
    said = text
    if n % 10 == 0:
        print(f"{greeting} #{n // 10} from pid {os.getpid()}", flush=True)
    time.sleep(0.1)
'''
FAILED_LOAD = re.compile(
    r"console error at (\S+):\d+: Failed to load resource: "
    r"the server responded with a status of (\d+) .*"
)
"""What Chromium writes to the console for a page or resource answered with an error."""
ABORTED = "failed: net::ERR_ABORTED"
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""
"""Run in every page before its own scripts: each CSP violation also becomes a console
error naming the directive, whatever Chromium itself chooses to log for it."""


@dataclass(frozen=True)
class Server:
    base: str
    acme: Path
    """The home of tenant `acme`, with app/hello.py (EXAMPLE_APP)."""
    other: Path
    """The home of tenant `other`, which the tenant user must never see."""

    def url(self, path: str) -> str:
        return self.base + path


# --- the server ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment() -> dict[str, str]:
    """This environment without any corral setting that could point at real homes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _corral_panel(home: Path, *args: str, stdin: str = "") -> None:
    """Run `corral panel <command> --home <home> ...` as an operator would.

    --home goes after the command: `corral panel --home X create-admin` would ignore it
    (the command's own --home default replaces it) and write to ~/.corral-panel."""
    command, *rest = args
    done = subprocess.run(
        [*PANEL, command, "--home", str(home), *rest],
        input=stdin,
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"corral panel {command} failed:\n{done.stdout}{done.stderr}"


def _wait_until_serving(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the panel did not start:\n{log.read_text()}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], homes: list[Path]) -> None:
    """Stop the tenants' daemons (over their sockets), then the panel, then wait for all of
    them and their apps; kill what is left (psutil checks a pid still names the process)."""
    tree: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(proc.pid).children(recursive=True)
    stop_daemons(homes)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    psutil.wait_procs(alive, timeout=5)


def _sample_often(panel_home: Path) -> None:
    """What an admin sets on the Settings screen: metrics every 2 s (the shortest allowed,
    default 10 s), so an app page's chart has points within a test."""
    database = Database.open(f"sqlite:///{panel_home / 'panel.db'}")
    try:
        with database.session() as db:
            set_setting(db, "metrics.interval", "2s")
    finally:
        database.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # Short paths: a tenant daemon's socket lives in its home (unix socket paths < 108 bytes).
    dirs = [Path(tempfile.mkdtemp(prefix="cp", dir="/tmp")) for _ in range(3)]
    panel_home, acme, other = dirs
    try:
        (acme / "app").mkdir()
        (acme / "app" / "hello.py").write_text(EXAMPLE_APP)
        _corral_panel(panel_home, "create-admin", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD)
        _corral_panel(panel_home, "add-tenant", "acme", "--dir", str(acme))
        _corral_panel(panel_home, "add-tenant", "other", "--dir", str(other))
        _sample_often(panel_home)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = panel_home / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*PANEL, "--home", str(panel_home), "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(),
            )
        try:
            _wait_until_serving(proc, base, log)
            yield Server(base, acme, other)
        finally:
            _stop(proc, [acme, other])
    finally:
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)


# --- browser helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    """expect() waits up to 10 s (Playwright's default is 5): two cores, many tests at once."""
    expect.set_options(timeout=10_000)
    try:
        yield
    finally:
        expect.set_options(timeout=5_000)


@pytest.fixture
def tab(tab: Tab) -> Tab:
    """conftest's tab, with CSP violations reported as console errors."""
    tab.context.add_init_script(CSP_WATCH)
    return tab


@contextlib.contextmanager
def second_tab(browser: Browser, folder: Path) -> Iterator[Tab]:
    """Another person's browser (own cookies), watched like the first."""
    with open_tab(browser, folder) as other:
        other.context.add_init_script(CSP_WATCH)
        yield other


def log_in(page: Page, server: Server, name: str, password: str) -> None:
    page.goto(server.url("/login"))
    submit_login(page, name, password)
    expect(page.locator("nav.user .me")).to_have_text(name)


def submit_login(page: Page, name: str, password: str) -> None:
    form = page.locator("form[action='/login']")
    form.locator("input[name=username]").fill(name)
    form.locator("input[name=password]").fill(password)
    form.get_by_role("button", name="Log in").click()


def field_message(page: Page, field_id: str) -> str:
    """The message shown next to a form field (its label holds the input and the message)."""
    label = page.locator("label.field-error", has=page.locator(f"#{field_id}"))
    expect(label.locator(".msg")).to_be_visible()
    return label.locator(".msg").inner_text()


def create_app(page: Page, server: Server, name: str, env: str = "") -> None:
    """Create and start an app of tenant acme through the New app form."""
    page.goto(server.url("/t/acme/apps/new"))
    page.locator("#f-name").fill(name)
    page.locator("#f-script").fill("app/hello.py")
    if env:
        page.locator("#f-env").fill(env)
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url(server.url(f"/t/acme/apps/{name}"))
    expect(page.locator(".statusbar [data-field=status]")).to_have_text("online")


def row_of(page: Page, app: str) -> Locator:
    """The app's row in the process table."""
    return page.locator(f"tr.proc[data-app='{app}']")


def shot(tab: Tab, page: Page, name: str) -> None:
    """A screenshot of another page of the tab's context, into the tab's folder."""
    path = tab.screenshots / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def say(server: Server, text: str) -> None:
    """Make the example apps print `said: <text>` (written whole: never read half-way)."""
    part = server.acme / "say.txt.part"
    part.write_text(text)
    part.replace(server.acme / "say.txt")


def assert_clean(watch: PageWatch) -> None:
    """No console error, CSP violation, uncaught exception, failed request or HTTP error.

    A request the browser itself cut short because its page navigated away (the chart's
    periodic fetch when a test clicks on) is not the page's fault: that one is let go."""
    watch.failed_requests[:] = [f for f in watch.failed_requests if not f.endswith(ABORTED)]
    watch.assert_clean()


def expect_only(watch: PageWatch, *answers: tuple[str, int]) -> None:
    """The only problems seen are these HTTP error answers (path, status), each with the
    console line Chromium writes for it; then forget them."""
    watch.failed_requests[:] = [f for f in watch.failed_requests if not f.endswith(ABORTED)]
    assert not watch.page_errors + watch.failed_requests, watch.problems()
    responses = []
    for line in watch.error_responses:
        _method, url, _arrow, status = line.split(" ")
        responses.append((urlsplit(url).path, int(status)))
    console = []
    for line in watch.console_errors:
        found = FAILED_LOAD.fullmatch(line)
        assert found, watch.problems()
        console.append((urlsplit(found[1]).path, int(found[2])))
    assert responses == list(answers), watch.problems()
    assert console == list(answers), watch.problems()
    watch.clear()


# --- the tests -------------------------------------------------------------------------


def test_an_admin_creates_scales_follows_stops_and_deletes_an_app(
    server: Server, tab: Tab, browser: Browser
) -> None:
    page = tab.page
    log_in(page, server, ADMIN, ADMIN_PASSWORD)
    page.locator("nav.tenants").get_by_role("link", name="acme").click()
    page.wait_for_url(server.url("/t/acme"))
    page.get_by_role("link", name="New app").first.click()
    page.wait_for_url(server.url("/t/acme/apps/new"))

    # A bad form first: nothing starts, each message stands next to its field.
    page.locator("#f-name").fill("web")
    page.locator("#f-script").fill("../../etc/passwd")
    page.locator("#f-instances").fill("lots")
    page.get_by_role("button", name="Create and start").click()
    expect(page.locator(".flash.bad")).to_contain_text("Nothing was started")
    assert "outside your home" in field_message(page, "f-script")
    assert "expected a whole number" in field_message(page, "f-instances")
    expect(page.locator("#f-script")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-name")).to_have_value("web")  # what was typed is kept
    expect(page.locator("label.field-error")).to_have_count(2)
    tab.screenshot("new-app-form-errors")
    expect_only(tab.watch, ("/t/acme/apps/new", 422))

    # The process table, open in a second page, must show the new app without a reload.
    table = tab.context.new_page()
    table.goto(server.url("/t/acme"))
    expect(table.locator("[data-live]")).to_have_attribute("data-live", "live")
    table.evaluate("window.notReloaded = true")

    page.locator("#f-script").fill("app/hello.py")
    page.locator("#f-instances").fill("1")
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url(server.url("/t/acme/apps/web"))
    expect(page.locator(".flash")).to_contain_text("Created web")

    row = row_of(table, "web")
    expect(row.locator("[data-field=status]")).to_have_text("online")
    expect(row.locator("[data-field=instances]")).to_have_text("1")

    # Scale out and back in from the table.
    row.get_by_role("button", name="One instance more").click()
    expect(row.locator("[data-field=instances]")).to_have_text("2")
    expect(row.locator(".dot.online")).to_have_count(2)
    expect(row.locator("[data-field=status]")).to_have_text("online")
    shot(tab, table, "process-table-two-instances")
    row.get_by_role("button", name="One instance fewer").click()
    expect(row.locator("[data-field=instances]")).to_have_text("1")
    expect(row.locator(".dot")).to_have_count(1)
    expect(row.get_by_role("button", name="One instance fewer")).to_be_disabled()
    assert table.evaluate("window.notReloaded") is True

    # The app page, then its logs: a line printed after the page opened shows up.
    tab.screenshot("app-page")
    page.locator("nav.tabs").get_by_role("link", name="Logs").click()
    page.wait_for_url(server.url("/t/acme/apps/web/logs"))
    expect(page.locator("[data-state]")).to_have_attribute("data-state", "live")
    expect(page.locator("pre.logs .ln", has_text="hello #").first).to_be_visible()
    say(server, "first words after the page opened")
    expect(page.locator("pre.logs .ln", has_text="said: first words after")).to_have_count(1)
    tab.screenshot("logs-following")

    # Stopped on the app page: the table in the other page turns "stopped" by itself.
    page.locator("nav.tabs").get_by_role("link", name="Overview").click()
    page.wait_for_url(server.url("/t/acme/apps/web"))
    page.locator(".statusbar").get_by_role("button", name="Stop").click()
    expect(page.locator(".statusbar [data-field=status]")).to_have_text("stopped")
    expect(row.locator("[data-field=status]")).to_have_text("stopped")
    expect(row.get_by_role("button", name="Start", exact=True)).to_be_enabled()

    # Deleted from the table, after saying yes in the confirmation dialog.
    row.get_by_role("button", name="Delete").click()
    dialog = table.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete the app “web”?")
    dialog.locator("[data-role=cancel]").click()
    expect(dialog).to_have_count(0)
    expect(row).to_have_count(1)  # cancelled: still there
    row.get_by_role("button", name="Delete").click()
    shot(tab, table, "delete-confirmation")
    table.locator("dialog.confirm [data-role=confirm]").click()
    expect(row).to_have_count(0)
    assert table.evaluate("window.notReloaded") is True

    # The audit log has all of it, with who did it to which app.
    page.locator("nav.user").get_by_role("link", name="Audit log").click()
    page.wait_for_url(server.url("/admin/audit"))
    page.locator("#f-app").fill("web")
    page.get_by_role("button", name="Filter").click()
    entries = page.locator("table.audit tbody tr")
    expect(entries.first).to_be_visible()
    seen = [
        tuple(cell.strip() for cell in r.locator("td").all_inner_texts()) for r in entries.all()
    ]
    # When, Actor, From, Tenant, App, Action, Result, Detail; newest first.
    summary = [
        (actor, tenant, app, action, result) for _, actor, _, tenant, app, action, result, _ in seen
    ]
    assert summary == [
        (ADMIN, "acme", "web", "app.delete", "ok"),
        (ADMIN, "acme", "web", "app.stop", "ok"),
        (ADMIN, "acme", "web", "app.scale", "ok"),
        (ADMIN, "acme", "web", "app.scale", "ok"),
        (ADMIN, "acme", "web", "app.create", "ok"),
        (ADMIN, "acme", "web", "app.create", "failed"),
    ], summary
    tab.screenshot("audit-log")

    page.locator("nav.user .me").click()
    page.wait_for_url(server.url("/account"))
    expect(page.locator("h1")).to_have_text("Your account")
    tab.screenshot("account")

    # Logging out ends the session: the login page, the other page's stream closes, and
    # the old cookie, replayed by another browser, is worth nothing.
    session = [c for c in tab.context.cookies() if c["name"] == "corral_session"]
    assert len(session) == 1
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(server.url("/login"))
    expect(page.get_by_role("heading", name="Log in to corral")).to_be_visible()
    expect(table.locator("[data-live]")).to_have_attribute("data-live", "ended")
    table.reload()
    table.wait_for_url(server.url("/login?next=/t/acme"))
    with second_tab(browser, tab.screenshots / "replay") as replay:
        replay.context.add_cookies(session)  # type: ignore[arg-type]
        replay.page.goto(server.url("/admin/audit"))
        replay.page.wait_for_url(server.url("/login?next=/admin/audit"))
        assert_clean(replay.watch)
    assert_clean(tab.watch)


def test_a_user_with_access_and_logs_can_look_but_not_touch(
    server: Server, tab: Tab, browser: Browser
) -> None:
    admin = tab.page
    log_in(admin, server, ADMIN, ADMIN_PASSWORD)
    create_app(admin, server, "ticker")

    # The admin makes the user on the Users screen and grants access and logs on acme.
    admin.locator("nav.user").get_by_role("link", name="Users").click()
    admin.wait_for_url(server.url("/admin/users"))
    admin.locator("#f-username").fill("lou")
    admin.locator("#f-password").fill(USER_PASSWORD)
    admin.get_by_role("button", name="Create user").click()
    admin.wait_for_url(re.compile(r".*/admin/users/\d+\?done=user-created"))
    expect(admin.locator(".flash")).to_contain_text("created")
    grants = admin.locator("tr[data-grant-row]", has_text="acme")
    grants.get_by_label("logs on acme").check()
    expect(grants.get_by_label("access on acme")).to_be_checked()  # logs includes access
    admin.get_by_role("button", name="Save grants").click()
    expect(admin.locator(".flash")).to_contain_text("grants were saved")
    expect(grants.get_by_label("access on acme")).to_be_checked()
    expect(grants.get_by_label("logs on acme")).to_be_checked()
    expect(grants.get_by_label("control on acme")).not_to_be_checked()
    expect(grants.get_by_label("manage on acme")).not_to_be_checked()
    expect(admin.locator("tr[data-grant-row]", has_text="other").locator(":checked")).to_have_count(
        0
    )
    admin.locator(".pagehead .crumbs").get_by_role("link", name="Users").click()
    lou_row = admin.locator("table.users tr", has_text="lou")
    expect(lou_row.locator(".tenantgrant")).to_have_text("acmeal")
    tab.screenshot("admin-users-with-grants")
    assert_clean(tab.watch)

    with second_tab(browser, tab.screenshots / "lou") as lou:
        page = lou.page
        page.goto(server.url("/"))
        page.wait_for_url(server.url("/login?next=/"))
        submit_login(page, "lou", USER_PASSWORD)
        page.wait_for_url(server.url("/t/acme"))  # the only tenant: straight there
        expect(page.locator("nav.tenants a")).to_have_text(["acme"])
        expect(page.locator("nav.user a")).to_have_text(["lou"])  # no admin screens
        expect(page.locator("[data-live]")).to_have_attribute("data-live", "live")
        row = row_of(page, "ticker")
        expect(row.locator("[data-field=status]")).to_have_text("online")
        expect(row.locator("button")).to_have_count(0)
        expect(page.locator("main button:enabled, main a.button")).to_have_count(0)
        lou.screenshot("tenant-as-viewer")

        row.get_by_role("link", name="ticker").click()
        page.wait_for_url(server.url("/t/acme/apps/ticker"))
        expect(page.locator(".statusbar [data-field=status]")).to_have_text("online")
        expect(page.locator("main form button")).to_have_count(0)  # no actions, no scale
        expect(page.locator("nav.tabs a")).to_have_text(["Overview", "Logs"])
        page.locator("nav.tabs").get_by_role("link", name="Logs").click()
        page.wait_for_url(server.url("/t/acme/apps/ticker/logs"))
        expect(page.locator("[data-state]")).to_have_attribute("data-state", "live")
        say(server, "a line for lou")
        expect(page.locator("pre.logs .ln", has_text="said: a line for lou")).to_have_count(1)

        # Another tenant does not exist for lou: the same 404 as a name nobody uses.
        for path in ("/t/other", "/t/other/apps/ticker", "/t/nobody"):
            answer = page.goto(server.url(path))
            assert answer is not None and answer.status == 404, path
            expect(page.get_by_role("heading", level=1)).to_have_text("404")
            expect(page.get_by_role("link", name="other")).to_have_count(0)
            expect(page.get_by_role("link", name="Back to the start page")).to_be_visible()
        lou.screenshot("not-found")
        expect_only(lou.watch, ("/t/other", 404), ("/t/other/apps/ticker", 404), ("/t/nobody", 404))
    assert_clean(tab.watch)


def test_the_config_editor_shows_a_mistake_in_place_and_applies_the_fix(
    server: Server, tab: Tab
) -> None:
    page = tab.page
    log_in(page, server, ADMIN, ADMIN_PASSWORD)
    create_app(page, server, "greeter", env="GREETING=hello")
    expect(page.locator("main")).not_to_contain_text("Restart above")
    pid = page.locator("tbody[data-instances] td.mono").first.inner_text()

    page.locator("nav.tabs").get_by_role("link", name="Config").click()
    page.wait_for_url(server.url("/t/acme/apps/greeter/config"))
    editor = page.locator("#config-text")
    original = editor.input_value()
    assert "GREETING: hello" in original, original
    mistaken = original.replace("GREETING: hello", "GREETING: bonjour").replace(
        "  instances: 1\n", "  instances: 1\n  max_memory_restat: 200M\n"
    )
    assert "max_memory_restat" in mistaken, original
    editor.fill(mistaken)
    page.get_by_role("button", name="Save and apply").click()
    expect(page.locator(".flash.bad")).to_contain_text("Nothing was changed")
    problem = page.locator("#config-errors .msg")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("unknown key 'max_memory_restat'")
    expect(problem).to_contain_text("did you mean 'max_memory_restart'?")
    expect(editor).to_have_attribute("aria-invalid", "true")
    expect(editor).to_have_value(mistaken)  # the text is kept for fixing
    tab.screenshot("config-error")
    expect_only(tab.watch, ("/t/acme/apps/greeter/config", 422))

    # Nothing changed: the same process, the old greeting, no memory limit.
    page.locator("nav.tabs").get_by_role("link", name="Overview").click()
    expect(page.locator("tbody[data-instances] td.mono").first).to_have_text(pid)
    expect(page.locator("main")).not_to_contain_text("Restart above")
    page.locator("nav.tabs").get_by_role("link", name="Config").click()
    page.wait_for_url(server.url("/t/acme/apps/greeter/config"))
    expect(editor).to_have_value(original)

    editor.fill(mistaken.replace("max_memory_restat:", "max_memory_restart:"))
    expect(page.get_by_label("restarting the app")).to_be_checked()
    page.get_by_role("button", name="Save and apply").click()
    page.wait_for_url(re.compile(r".*/t/acme/apps/greeter(\?.*)?$"))
    expect(page.locator(".flash")).not_to_have_class(re.compile(r"\bbad\b"))
    restart_above = page.locator("dl.kv dt", has_text="Restart above").locator(
        "xpath=following-sibling::dd[1]"
    )
    expect(restart_above).to_have_text("200.0 MiB")
    expect(page.locator("tbody[data-instances] td.mono").first).not_to_have_text(pid)
    page.locator("nav.tabs").get_by_role("link", name="Logs").click()
    expect(page.locator("pre.logs .ln", has_text="bonjour #")).not_to_have_count(0)

    # Back on the overview, the chart draws the panel's samples as they come.
    page.locator("nav.tabs").get_by_role("link", name="Overview").click()
    chart = page.locator(".chart[data-chart-src]")
    expect(chart).to_have_attribute(
        "data-chart-points", re.compile(r"^([3-9]|\d\d+)$"), timeout=20_000
    )
    expect(chart.locator("svg")).to_be_visible()
    tab.screenshot("app-page-with-chart")
    assert_clean(tab.watch)


def test_a_wrong_password_says_so_and_repeated_failures_say_to_wait(
    server: Server, tab: Tab
) -> None:
    page = tab.page
    page.goto(server.url("/login"))
    submit_login(page, ADMIN, "not the password")
    expect(page.get_by_role("alert")).to_have_text("wrong user name, password or code")
    expect(page.locator("input[name=username]")).to_have_value(ADMIN)
    expect(page.locator("input[name=password]")).to_have_value("")
    tab.screenshot("login-wrong-password")
    expect_only(tab.watch, ("/login", 401))

    # Someone guessing at one account: after the limit the page says to wait.
    for _ in range(ACCOUNT_LIMIT):
        submit_login(page, "mallory", "guess")
        expect(page.get_by_role("alert")).to_have_text("wrong user name, password or code")
    submit_login(page, "mallory", "guess")
    expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"too many failed logins; try again in \d+ s")
    )
    tab.screenshot("login-throttled")
    expect_only(tab.watch, *[("/login", 401)] * ACCOUNT_LIMIT, ("/login", 429))

    # The lock is the guessed account's: the admin still logs in.
    submit_login(page, ADMIN, ADMIN_PASSWORD)
    page.wait_for_url(server.url("/"))
    assert_clean(tab.watch)


def _daemon_pids(home: Path, app: str) -> list[int]:
    """The pids of an app of the tenant whose home is `home`, asked of its daemon."""
    with ControlClient.connect(Home(home / ".corral").socket, timeout=10) as client:
        return sorted(r["pid"] for r in client.call("list") if r["name"] == app)


def _assert_nowhere(page: Page, values: list[str]) -> None:
    """Neither the page's HTML nor any of its fields' current values hold a value, in
    clear, base64 or hex."""
    html = page.content()
    fields = " ".join(page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value)"))
    for value in values:
        raw = value.encode()
        for form in (value, base64.b64encode(raw).decode(), raw.hex()):
            assert form not in html, f"the page {page.url} holds a secret"
            assert form not in fields, f"a field of {page.url} holds a secret"


def test_a_secret_is_added_masked_replaced_and_applied_when_the_user_says(
    server: Server, tab: Tab
) -> None:
    page = tab.page
    first, second = (f"s3cr3t-{secrets.token_urlsafe(18)}" for _ in range(2))
    log_in(page, server, ADMIN, ADMIN_PASSWORD)
    create_app(page, server, "vault", env="GREETING=hi")
    pids = _daemon_pids(server.acme, "vault")

    page.locator("nav.tabs").get_by_role("link", name="Environment").click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env"))
    expect(page.locator("tr[data-var=GREETING] td").nth(1)).to_have_text("hi")
    secret_box, value = page.locator("#f-secret"), page.locator("#f-value")
    apply = page.locator("[data-env-form] [data-apply]")
    # A secret by default, typed into a password field; a plain one shows what is typed.
    expect(secret_box).to_be_checked()
    expect(value).to_have_attribute("type", "password")
    expect(apply).to_be_hidden()
    secret_box.uncheck()
    expect(value).to_have_attribute("type", "text")
    expect(apply).to_be_visible()
    secret_box.check()
    expect(value).to_have_attribute("type", "password")

    page.locator("#f-name").fill("API_TOKEN")
    value.fill(first)
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env?pending=1"))
    expect(page.locator(".flash")).to_contain_text("Saved the secret API_TOKEN of vault")
    row = page.locator("tr[data-secret=API_TOKEN]")
    expect(row.locator(".masked")).to_have_text("••••••••")
    expect(row.locator("[data-field=set]")).to_have_text(re.compile(r"^set \d{4}-\d\d-\d\d "))
    offer = page.locator("[data-pending]")
    expect(offer.get_by_role("button", name="Restart")).to_be_visible()
    expect(offer.get_by_role("button", name="Reload")).to_be_visible()
    _assert_nowhere(page, [first])
    assert _daemon_pids(server.acme, "vault") == pids  # saved, nothing restarted
    tab.screenshot("env-secret-saved")

    # Replaced: a new value in a password field that never shows the old one.
    row.locator("summary", has_text="Replace").click()
    field = row.locator("input[type=password][name=value]")
    expect(field).to_have_value("")
    field.fill(second)
    row.get_by_role("button", name="Replace").click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env?pending=1"))
    expect(page.locator(".flash")).to_contain_text("Replaced the secret API_TOKEN of vault")
    expect(page.locator("tr[data-secret]")).to_have_count(1)
    _assert_nowhere(page, [first, second])
    assert _daemon_pids(server.acme, "vault") == pids
    tab.screenshot("env-secret-replaced")

    # A plain variable edited with the default choice is saved, and not applied either.
    plain = page.locator("tr[data-var=GREETING]")
    plain.locator("summary", has_text="Edit").click()
    expect(plain.get_by_label("at the app's next start")).to_be_checked()
    plain.locator("input[name=value]").fill("hey")
    plain.get_by_role("button", name="Save").click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env?pending=1"))
    expect(page.locator(".flash")).to_contain_text("Set the variable GREETING of vault.")
    expect(page.locator("tr[data-var=GREETING] td").nth(1)).to_have_text("hey")
    assert _daemon_pids(server.acme, "vault") == pids

    # Applied when the user says so, with the offered button.
    page.locator("[data-pending]").get_by_role("button", name="Restart").click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env"))
    expect(page.locator(".flash")).to_contain_text("Restarted vault: online.")
    expect(page.locator("[data-pending]")).to_have_count(0)
    assert _daemon_pids(server.acme, "vault") != pids
    answer = page.evaluate("corral.api('GET', '/api/v1/tenants/acme/apps/vault/env')")
    assert answer["env"] == {"GREETING": "hey"}
    assert [s["name"] for s in answer["secrets"]] == ["API_TOKEN"]
    assert first not in str(answer) and second not in str(answer)
    _assert_nowhere(page, [first, second])

    # Removed after confirming.
    row.get_by_role("button", name="Remove").click()
    page.locator("dialog.confirm [data-role=confirm]").click()
    page.wait_for_url(server.url("/t/acme/apps/vault/env?pending=1"))
    expect(page.locator(".flash")).to_contain_text("Removed the secret API_TOKEN of vault")
    expect(page.locator("tr[data-secret]")).to_have_count(0)
    assert_clean(tab.watch)

    # The panel started acme's daemon itself: with the tenant's name, which the store binds
    # into every ciphertext.
    daemon_pid = int(Home(server.acme / ".corral").pid_file.read_text())
    assert psutil.Process(daemon_pid).environ().get("CORRAL_TENANT") == "acme"
