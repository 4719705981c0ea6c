"""Git deploys in the panel as people use them (issue 10, "How it is shown"): a real
`corral panel` process, the tenant's daemon it starts itself, a git repository served over
HTTPS on loopback (a CA made by the test), headless Chromium.

An admin creates an app, gives it a git source on the Deploy tab, deploys it, watches the
output come in live, sees the new release serving, and enables the deploy webhook: the
token is shown once and is gone after a reload. Every page is checked for console
errors, CSP violations (no inline script), failed requests and HTTP errors.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.panel.test_browser_flow import (
    ADMIN,
    ADMIN_PASSWORD,
    CSP_WATCH,
    PANEL,
    _corral_panel,
    _environment,
    _free_port,
    _stop,
    _wait_until_serving,
    assert_clean,
    expect_only,
    log_in,
)
from tests.support.browser import Tab
from tests.support.gitrepos import GitRepo, git_https_server, make_repo
from tests.support.tls import Pki, make_pki

pytestmark = pytest.mark.slow

TOKEN = "repo-token-for-the-browser-test"
APP_CODE = """\
import pathlib, time
version = pathlib.Path(__file__).with_name("VERSION").read_text().strip()
while True:
    print(f"serving {version}", flush=True)
    time.sleep(0.3)
"""
# One build step, typed as a command line; it prints over about two seconds, so the
# output is seen arriving while the deploy runs.
STEP = (
    "python3 -c \"import time; [print('building', i, flush=True) or time.sleep(0.4) "
    'for i in range(5)]"'
)


@dataclass(frozen=True)
class Site:
    base: str
    home: Path
    pki: Pki
    repo: GitRepo
    repo_url: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    dirs = [Path(tempfile.mkdtemp(prefix="cpb", dir="/tmp")) for _ in range(2)]
    panel_home, acme = dirs
    work = Path(tempfile.mkdtemp(prefix="cpg"))
    try:
        (acme / "app").mkdir()
        (acme / "app" / "main.py").write_text(APP_CODE)
        (acme / "app" / "VERSION").write_text("from-home\n")
        pki = make_pki(work / "pki")
        repo = make_repo(work / "git", {"app/main.py": APP_CODE, "app/VERSION": "v1\n"})
        _corral_panel(panel_home, "create-admin", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD)
        _corral_panel(panel_home, "add-tenant", "acme", "--dir", str(acme))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = panel_home / "server.log"
        with git_https_server(repo.served, pki, auth=("deployer", TOKEN)) as git_base:
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
                url = git_base.replace("https://", f"https://deployer:{TOKEN}@")
                yield Site(base, acme, pki, repo, f"{url}/{repo.path}")
            finally:
                _stop(proc, [acme])
    finally:
        for folder in [*dirs, work]:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    expect.set_options(timeout=20_000)  # a deploy: fetch, export, step, reload
    try:
        yield
    finally:
        expect.set_options(timeout=5_000)


def test_an_admin_deploys_from_git_watches_it_live_and_enables_the_webhook(
    site: Site, tab: Tab
) -> None:
    tab.context.add_init_script(CSP_WATCH)
    page = tab.page
    log_in(page, site, ADMIN, ADMIN_PASSWORD)  # type: ignore[arg-type]

    # An app as any other, whose environment trusts the git server's CA.
    page.goto(site.url("/t/acme/apps/new"))
    page.locator("#f-name").fill("web")
    page.locator("#f-script").fill("app/main.py")
    page.locator("#f-env").fill(f"GIT_SSL_CAINFO={site.pki.ca_cert}")
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url(site.url("/t/acme/apps/web"))

    # The Deploy tab: no source yet, the form is open.
    page.locator("nav.tabs").get_by_role("link", name="Deploy").click()
    page.wait_for_url(site.url("/t/acme/apps/web/deploy"))
    expect(page.locator("[data-no-source]")).to_be_visible()
    expect(page.locator("#g-script")).to_have_value("app/main.py")

    # A mistake first: the message stands next to its field; nothing is saved.
    page.locator("#g-repo").fill(site.repo_url)
    page.locator("#g-branch").fill("--upload-pack=touch /tmp/owned")
    page.locator("#g-steps").fill(STEP)
    page.get_by_role("button", name="Save the git source").click()
    expect(page.locator("#e-branch")).to_contain_text("must not start with '-'")
    expect(page.locator("#g-branch")).to_have_attribute("aria-invalid", "true")
    tab.screenshot("git-source-error")
    expect_only(tab.watch, ("/t/acme/apps/web/deploy/source", 422))

    page.locator("#g-repo").fill(site.repo_url)  # never shown back: type it again
    page.locator("#g-branch").fill("main")
    page.get_by_role("button", name="Save the git source").click()
    expect(page.locator(".flash")).to_contain_text("Saved the git source of web")
    expect(page.locator("[data-field=repo]")).to_have_text(
        site.repo_url.replace(f"deployer:{TOKEN}", "***")
    )
    assert TOKEN not in page.content()
    expect(page.locator("[data-field=steps] li")).to_have_text(
        ['["python3", "-c", "import time; [print(\'building\', i, flush=True) or '
         'time.sleep(0.4) for i in range(5)]"]']
    )  # fmt: skip
    tab.screenshot("git-source")

    # Deploy now: on to the deploy's page, where the output comes in live.
    page.get_by_role("button", name="Deploy now").click()
    page.wait_for_url("**/t/acme/apps/web/deploys/*")
    page.evaluate("window.notReloaded = true")
    output = page.locator("pre[data-output]")
    expect(output).to_contain_text("building 0")
    expect(output).to_contain_text("building 4")
    expect(page.locator("[data-status]")).to_have_text("succeeded")
    expect(page.locator("[data-state]")).to_have_text("finished")
    expect(output).to_contain_text("$ git ")
    assert TOKEN not in output.inner_text()
    assert page.evaluate("window.notReloaded") is True  # all of it came over the socket
    tab.screenshot("deploy-output")

    # The new release serves: its lines in the app's logs.
    page.goto(site.url("/t/acme/apps/web/logs"))
    expect(page.locator("pre.logs .ln", has_text="serving v1").first).to_be_visible()

    # History and the release.
    page.goto(site.url("/t/acme/apps/web/deploy"))
    row = page.locator("table.deploys tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("succeeded")
    expect(row).to_contain_text("panel: root")
    expect(page.locator("table.releases tr.current")).to_have_count(1)

    # The webhook: its token is shown once, never again.
    page.get_by_role("button", name="Enable webhook").click()
    token = page.locator("[data-webhook-token] .token")
    expect(token).to_be_visible()
    value = token.inner_text().strip()
    assert len(value) >= 43  # 32 random bytes, base64url
    tab.screenshot("webhook-token-once")
    page.goto(site.url("/t/acme/apps/web/deploy"))
    expect(page.locator("section.webhook")).to_have_attribute("data-webhook", "on")
    expect(page.locator("[data-webhook-token]")).to_have_count(0)
    assert value not in page.content()
    assert_clean(tab.watch)
