"""Headless Chromium (Debian's `chromium`) driven by Playwright's sync API.

Playwright's own browser builds are never used or downloaded: `launch` always gets the
system binary as `executable_path`. The sync API cannot run inside a running asyncio
loop, so everything here is plain synchronous code for plain sync fixtures; a server
under test runs in another thread or process.

Clean-up does not rely on Playwright alone: the driver (node) and every Chromium process
under it are remembered as psutil objects, waited for after a normal close, and killed if
still there. psutil checks a process's start time before signalling it, so a pid reused
after the browser exited is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    WebError,
    sync_playwright,
)

INSTALL_HINT = (
    "Chromium was not found (`chromium` in PATH or /usr/bin/chromium); install it with "
    "`scripts/setup --dev` (Debian package `chromium`). Playwright's own browser download "
    "(`playwright install`) is not used"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_TIMEOUT_MS = 10_000


class ChromiumUnavailable(RuntimeError):
    """No Chromium binary here; the message says how to install it."""


def find_chromium() -> Path:
    found = shutil.which("chromium")
    if found:
        return Path(found)
    if os.access("/usr/bin/chromium", os.X_OK):
        return Path("/usr/bin/chromium")
    raise ChromiumUnavailable(INSTALL_HINT)


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _is_driver(proc: psutil.Process) -> bool:
    try:
        return "run-driver" in proc.cmdline()
    except psutil.Error:
        return False


def _descendants(processes: list[psutil.Process]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            found.extend(proc.children(recursive=True))
    return found


def _stop_all(processes: list[psutil.Process]) -> None:
    """Wait a little for processes already told to exit; kill whatever is left."""
    _gone, alive = psutil.wait_procs(processes, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@contextmanager
def chromium(parent: Path | None = None) -> Iterator[Browser]:
    """Start the Playwright driver and a headless Chromium; always stop both.

    The driver runs with TMPDIR set to a new folder in `parent` (the system temp dir by
    default), so Chromium's fresh profile (Playwright makes a new user-data-dir for every
    launch), Playwright's artifacts and Chromium's own temporary files all live there, and
    the folder is removed at the end. Keep `parent` short: Chromium puts a unix socket in it
    and refuses to start when that path is longer than 107 bytes.

    One sync Playwright per thread: a second launch while one is open needs another thread.
    """
    executable = find_chromium()
    me = psutil.Process()
    before = set(me.children())
    workdir = Path(tempfile.mkdtemp(prefix="crl-chr-", dir=parent))
    try:
        # Only the driver's environment is meant; the variable is put back at once.
        with _environ("TMPDIR", str(workdir)):
            playwright = sync_playwright().start()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    drivers = [proc for proc in set(me.children()) - before if _is_driver(proc)]
    browser: Browser | None = None
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
    finally:
        # Found before anything is told to go: once the driver exits, its orphans are not.
        tree = [*drivers, *_descendants(drivers)]
        try:
            with contextlib.suppress(Exception):
                if browser is not None:
                    browser.close()
            with contextlib.suppress(Exception):
                playwright.stop()
        finally:
            _stop_all(tree)
            shutil.rmtree(workdir, ignore_errors=True)


def _where(url: str, line: int) -> str:
    return f"{url}:{line}" if url else "(inline)"


@dataclass
class PageWatch:
    """What went wrong in the pages of one browser context: console errors, uncaught
    exceptions, requests that failed at the network level, and HTTP error answers."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("console", self._on_console)
        context.on("weberror", self._on_web_error)
        context.on("requestfailed", self._on_request_failed)
        context.on("response", self._on_response)

    def _on_console(self, message: ConsoleMessage) -> None:
        # CSP violations and resources that failed to load show up here as well.
        if message.type == "error":
            where = message.location
            self.console_errors.append(
                f"console error at {_where(where['url'], where['lineNumber'])}: {message.text}"
            )

    def _on_web_error(self, error: WebError) -> None:
        self.page_errors.append(f"uncaught {error.error.name}: {error.error.message}")

    def _on_request_failed(self, request: Request) -> None:
        self.failed_requests.append(f"{request.method} {request.url} failed: {request.failure}")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            request = response.request
            self.error_responses.append(f"{request.method} {response.url} -> {response.status}")

    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests + self.error_responses

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the page had problems:\n  " + "\n  ".join(problems)

    def clear(self) -> None:
        for found in (
            self.console_errors,
            self.page_errors,
            self.failed_requests,
            self.error_responses,
        ):
            found.clear()


@dataclass
class Tab:
    """One test's browser: its own context (cookies, storage), a page, what went wrong in
    it, and where its screenshots go."""

    context: BrowserContext
    page: Page
    watch: PageWatch
    screenshots: Path
    _taken: int = 0

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a PNG of the page as screenshots/NN-<name>.png, print and return its path."""
        self._taken += 1
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "page"
        path = self.screenshots / f"{self._taken:02d}-{slug}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path, full_page=full_page)
        print(f"screenshot: {path}")
        return path


@contextmanager
def open_tab(browser: Browser, screenshots: Path) -> Iterator[Tab]:
    """A fresh context and page on `browser`, closed afterwards even if the test failed."""
    # Fixed size, locale and zone: screenshots and dates look the same on every machine.
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-US", timezone_id="UTC"
    )
    try:
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        watch = PageWatch()
        watch.attach(context)
        yield Tab(context, context.new_page(), watch, screenshots)
    finally:
        with contextlib.suppress(Exception):
            context.close()
