"""Fixtures for the hub: its database on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import ChromiumUnavailable, Tab, chromium, open_tab
from tests.support.postgres import PostgresServer, PostgresUnavailable, fresh_database
from tests.support.postgres import postgres_server as start_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_postgres())
        except PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs twice: on a SQLite file, and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    with fresh_database(request.getfixturevalue("pg_server"), request.node.name) as url:
        yield url


@pytest.fixture
def tab(tmp_path: Path) -> Iterator[Tab]:
    """Headless Chromium with a fresh context; stopped after the test even on failure."""
    with contextlib.ExitStack() as stack:
        try:
            browser = stack.enter_context(chromium())
        except ChromiumUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield stack.enter_context(open_tab(browser, tmp_path / "screenshots"))
