"""Headless Chromium (Debian's `chromium`) driven by Playwright's sync API.

Playwright's own browser builds are never used or downloaded: `launch` always gets the
system binary as `executable_path`. The sync API cannot run inside a running asyncio
loop, so everything here is plain synchronous code for plain sync fixtures; a server
under test runs in another thread or process.

Clean-up does not rely on Playwright alone: the driver (node) and each browser's process
tree are remembered as psutil objects, waited for after a normal close, and killed if
still there. psutil checks a process's start time before signalling it, so a pid reused
after the browser exited is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
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
    Playwright,
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


def _children(processes: list[psutil.Process], *, recursive: bool = False) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            found.extend(proc.children(recursive=recursive))
    return found


def _stop_all(processes: list[psutil.Process]) -> None:
    """Wait a little for processes already told to exit; kill whatever is left."""
    _gone, alive = psutil.wait_procs(processes, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@dataclass
class _Driver:
    playwright: Playwright
    processes: list[psutil.Process]
    users: int = 0


# A thread can hold only one sync Playwright (a second start fails: "using Playwright Sync
# API inside the asyncio loop"), so launches in one thread share its driver.
_per_thread = threading.local()


@contextmanager
def _driver(parent: Path | None) -> Iterator[_Driver]:
    """This thread's Playwright driver, started by the first user, stopped with the last.

    It runs with TMPDIR set to a folder of its own, where Playwright makes each launch's
    fresh user-data-dir and its artifacts; the folder is removed with the driver."""
    driver: _Driver | None = getattr(_per_thread, "driver", None)
    folder: Path | None = None
    if driver is None:
        folder = Path(tempfile.mkdtemp(prefix="crl-pw-", dir=parent))
        me = psutil.Process()
        before = set(me.children())
        try:
            # Meant for the driver's environment only; put back as soon as it has started.
            with _environ("TMPDIR", str(folder)):
                playwright = sync_playwright().start()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        driver = _Driver(playwright, [p for p in set(me.children()) - before if _is_driver(p)])
        _per_thread.driver = driver
    driver.users += 1
    try:
        yield driver
    finally:
        driver.users -= 1
        if driver.users == 0:
            del _per_thread.driver
            # Found before anything is told to go: once the driver exits, its orphans are not.
            tree = [*driver.processes, *_children(driver.processes, recursive=True)]
            try:
                with contextlib.suppress(Exception):
                    driver.playwright.stop()
            finally:
                _stop_all(tree)
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def chromium(parent: Path | None = None) -> Iterator[Browser]:
    """Launch a headless Chromium; always close it and kill whatever of it is left.

    Chromium's own temporary files go to a new folder in `parent` (the system temp dir by
    default), removed at the end. Keep `parent` short: Chromium puts a unix socket there and
    will not start when that path is longer than 107 bytes. Launches may nest (the session's
    browser and a test's own): they share the thread's Playwright driver.
    """
    executable = find_chromium()
    workdir = Path(tempfile.mkdtemp(prefix="crl-chr-", dir=parent))
    try:
        with _driver(parent) as driver:
            before = set(_children(driver.processes))
            browser: Browser | None = None
            mine: list[psutil.Process] = []
            try:
                browser = driver.playwright.chromium.launch(
                    executable_path=executable,
                    headless=True,
                    args=CHROMIUM_ARGS,
                    env={**os.environ, "TMPDIR": str(workdir)},
                )
                # This browser's main process: the driver's new child (one thread, one launch).
                mine = [p for p in _children(driver.processes) if p not in before]
                yield browser
            finally:
                tree = [*mine, *_children(mine, recursive=True)]
                try:
                    with contextlib.suppress(Exception):
                        if browser is not None:
                            browser.close()
                finally:
                    _stop_all(tree)
    finally:
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
