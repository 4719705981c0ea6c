"""The panel's test infrastructure works: a real PostgreSQL server hands out separate
databases, a real headless Chromium loads pages, takes screenshots and reports errors,
and both are stopped completely, also when the code using them fails."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page

from tests.support.browser import Tab, chromium, open_tab
from tests.support.postgres import USER, PostgresServer, fresh_database, postgres_server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def running(proc: psutil.Process) -> bool:
    """Still there and not a zombie (psutil checks it is the same process, not a reuse)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def table_names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.slow
def test_pg_url_is_a_working_database(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(pg_url)
    try:
        notes = sa.Table(
            "notes",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("text", sa.String(50)),
        )
        notes.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(notes.insert(), [{"text": "first"}, {"text": "second"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(notes.c.text).order_by(notes.c.id)).scalars().all()
            assert rows == ["first", "second"]
            assert conn.execute(sa.text("select current_user")).scalar() == USER
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_with_an_empty_database(pg_url: str, run: int) -> None:
    # Both runs create the same table: on a shared database the second would find it.
    assert table_names(pg_url) == []
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table left_behind (run integer)"))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_databases_are_separate_and_dropped_afterwards(
    pg_server: PostgresServer, pg_url: str
) -> None:
    with fresh_database(pg_server, "other") as other:
        assert other != pg_url
        engine = sa.create_engine(pg_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("create table mine (x integer)"))
        finally:
            engine.dispose()
        assert table_names(pg_url) == ["mine"]
        assert table_names(other) == []
        # An engine the test forgot to dispose must not keep the database alive.
        leaked = sa.create_engine(other)
        leaked.connect()
        other_name = other.rsplit("/", 1)[1]
    with pg_server.admin() as conn:
        names = conn.execute("select datname from pg_database").fetchall()
    assert (other_name,) not in names


@pytest.mark.slow
def test_server_is_private_to_this_machine_and_folder(pg_server: PostgresServer) -> None:
    with pg_server.admin() as conn:

        def setting(name: str) -> object:
            row = conn.execute(f"show {name}").fetchone()
            assert row is not None
            return row[0]

        assert setting("listen_addresses") == "127.0.0.1"
        assert setting("unix_socket_directories") == str(pg_server.root)
        assert setting("fsync") == "off"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=pg_server.port, user=USER, password="wrong", dbname="postgres"
        )


@pytest.mark.slow
def test_server_is_stopped_and_removed_even_when_the_user_fails() -> None:
    seen: list[psutil.Process] = []
    with pytest.raises(RuntimeError, match="test body failed"), postgres_server() as server:
        root = server.root
        seen.append(psutil.Process(server.process.pid))
        seen.extend(seen[0].children(recursive=True))
        assert len(seen) > 1  # the postmaster and its helpers
        raise RuntimeError("test body failed")
    assert not [proc for proc in seen if running(proc)]
    assert server.process.returncode is not None
    assert not root.exists()


def test_database_url(database_url: str) -> None:
    # Both back ends speak the same SQLAlchemy: what the panel's store will rely on.
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (x integer)"))
            conn.execute(sa.text("insert into t values (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select x from t")).scalar() == 42
    finally:
        engine.dispose()
    assert database_url.split(":", 1)[0] in {"sqlite", "postgresql+psycopg"}


# --- Chromium ---------------------------------------------------------------------------

PAGES = {
    # Without an icon Chromium's request for one is a 404 console error.
    "/favicon.ico": b"",
    "/": b"<!doctype html><title>corral test page</title><h1>Hello from loopback</h1>",
    "/broken": b"""<!doctype html><title>broken</title>
<img src="/missing.png" alt="">
<script>
console.error("boom from the page");
fetch("http://127.0.0.1:%(closed)d/nothing").catch(() => {});
setTimeout(() => { throw new Error("kaboom"); }, 0);
</script>""",
}


class _Site(http.server.BaseHTTPRequestHandler):
    closed_port = 0

    def do_GET(self) -> None:
        page = PAGES.get(self.path)
        if page is None:
            self.send_error(404)
            return
        body = page % {b"closed": self.closed_port} if b"%(" in page else page
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not
    listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def site(closed_port: int) -> Iterator[str]:
    """A tiny HTTP server on loopback in a thread; yields its base URL."""
    handler = type("Site", (_Site,), {"closed_port": closed_port})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def wait_until(page: Page, condition: Callable[[], bool], timeout_ms: int = 10_000) -> None:
    """Let Playwright deliver events (they arrive while it waits) until `condition`."""
    waited = 0
    while not condition():
        assert waited < timeout_ms, "condition not reached"
        page.wait_for_timeout(50)
        waited += 50


@pytest.mark.slow
def test_page_loads_and_is_screenshotted(tab: Tab, page: Page, site: str) -> None:
    assert tab.page is page
    page.goto(site + "/")
    assert page.title() == "corral test page"
    assert page.locator("h1").inner_text() == "Hello from loopback"
    shot = tab.screenshot("index page")
    assert shot.parent == tab.screenshots
    assert shot.name == "01-index-page.png"
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000
    tab.watch.assert_clean()


@pytest.mark.slow
def test_console_errors_and_failed_requests_are_collected(
    tab: Tab, site: str, closed_port: int
) -> None:
    watch = tab.watch
    tab.page.goto(site + "/broken")
    wait_until(tab.page, lambda: bool(watch.page_errors and watch.failed_requests))
    assert any("boom from the page" in error for error in watch.console_errors)
    assert any("kaboom" in error for error in watch.page_errors)
    assert any(f"127.0.0.1:{closed_port}/nothing" in failed for failed in watch.failed_requests)
    assert any("/missing.png -> 404" in bad for bad in watch.error_responses)
    with pytest.raises(AssertionError, match="boom from the page"):
        watch.assert_clean()
    watch.clear()
    watch.assert_clean()


@pytest.mark.slow
def test_each_test_gets_its_own_cookies(
    browser: Browser, tab: Tab, site: str, tmp_path: Path
) -> None:
    tab.page.goto(site + "/")
    tab.page.evaluate("document.cookie = 'session=abc; path=/'")
    assert tab.page.evaluate("document.cookie") == "session=abc"
    with open_tab(browser, tmp_path / "other") as other:
        other.page.goto(site + "/")
        assert other.page.evaluate("document.cookie") == ""


def launch_and_fail(parent: Path) -> dict[psutil.Process, str]:
    """Launch Chromium in `parent`, load a page, fail; return the processes that came up."""
    me = psutil.Process()
    before = set(me.children(recursive=True))
    seen: dict[psutil.Process, str] = {}
    with pytest.raises(RuntimeError, match="test body failed"), chromium(parent) as launched:
        launched.new_page().set_content("<title>x</title>")
        seen.update((proc, proc.name()) for proc in set(me.children(recursive=True)) - before)
        raise RuntimeError("test body failed")
    return seen


@pytest.mark.slow
def test_a_second_browser_stops_even_when_the_user_fails(tab: Tab, site: str) -> None:
    # The test's browser is open in this thread: the second shares its driver.
    parent = Path(tempfile.mkdtemp(prefix="crl-t-"))  # short: Chromium puts a socket there
    try:
        seen = launch_and_fail(parent)
        leftovers = list(parent.iterdir())
    finally:
        shutil.rmtree(parent)
    assert "chromium" in seen.values()
    assert not any(name.startswith("node") for name in seen.values())  # it was there before
    assert not [proc for proc in seen if running(proc)]
    assert leftovers == []  # its temporary files went with it
    tab.page.goto(site + "/")  # the first browser is unharmed
    assert tab.page.title() == "corral test page"


@pytest.mark.slow
def test_driver_and_chromium_stop_even_when_the_user_fails() -> None:
    parent = Path(tempfile.mkdtemp(prefix="crl-t-"))
    seen: dict[psutil.Process, str] = {}
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            seen.update(launch_and_fail(parent))
        except BaseException as exc:
            failures.append(exc)

    # A thread of its own, so this launch surely starts a driver, and must stop it.
    thread = threading.Thread(target=guarded)
    thread.start()
    thread.join(timeout=60)
    try:
        assert not thread.is_alive()
        assert not failures, failures
        leftovers = list(parent.iterdir())
    finally:
        shutil.rmtree(parent)
    assert "chromium" in seen.values()
    assert any(name.startswith("node") for name in seen.values())  # Playwright's driver
    assert not [proc for proc in seen if running(proc)]
    assert leftovers == []  # the driver's folder (profiles) and the browser's


@pytest.mark.slow
def test_no_event_loop_is_left_running_after_the_browser() -> None:
    # A sync Playwright marks its asyncio loop as running in the thread while it is open;
    # once the browser is closed, asyncio.run() must work again (tests after this use it).
    with chromium() as launched:
        launched.new_page().set_content("<title>x</title>")
        refused = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="running event loop"):
            asyncio.run(refused)
        refused.close()
    asyncio.run(asyncio.sleep(0))
