"""Fixtures for the panel tests: databases (SQLite, and a real PostgreSQL server) and a
real headless Chromium. The heavy parts live in tests/support/; this file wires them up.

With pytest-xdist every worker that needs it starts its own PostgreSQL server, once;
each test gets a fresh database. Each browser test gets its own Chromium (see `browser`).
Browser tests are plain sync functions (Playwright's sync API refuses to run inside an
asyncio loop): serve the panel from a thread or a process. A test that wants a second
browser nests `tests.support.browser.chromium()`, which shares the test's driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import ChromiumUnavailable, Tab, chromium, open_tab
from tests.support.postgres import PostgresServer, PostgresUnavailable, fresh_database
from tests.support.postgres import postgres_server as start_postgres

T = TypeVar("T")


def _enter_or_fail(stack: contextlib.ExitStack, manager: AbstractContextManager[T]) -> T:
    """A missing PostgreSQL or Chromium fails the tests with how to install it, never skips
    them: CI installs both, so a skip there would hide a broken set-up."""
    try:
        return stack.enter_context(manager)
    except (PostgresUnavailable, ChromiumUnavailable) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


# --- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the session, stopped at the end even on failure."""
    with contextlib.ExitStack() as stack:
        yield _enter_or_fail(stack, start_postgres())


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty PostgreSQL database, dropped after the test."""
    with fresh_database(pg_server, request.node.name) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file, and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'panel.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


# --- browser ---------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless system Chromium; it and Playwright's driver always stop after the test.

    Per test, not per session, on purpose: while a sync Playwright is open, its asyncio loop
    counts as running in this thread, so every later test on the same xdist worker would
    fail in asyncio.run() ("cannot be called from a running event loop")."""
    with contextlib.ExitStack() as stack:
        yield _enter_or_fail(stack, chromium())


@pytest.fixture
def tab(browser: Browser, tmp_path: Path) -> Iterator[Tab]:
    """A fresh context (own cookies) and page; `tab.watch` collects console errors and
    failed requests, `tab.screenshot(name)` saves a PNG under <tmp_path>/screenshots."""
    with open_tab(browser, tmp_path / "screenshots") as opened:
        yield opened


@pytest.fixture
def page(tab: Tab) -> Page:
    """The page of this test's `tab`."""
    return tab.page
