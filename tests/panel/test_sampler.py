"""The metrics sampler against real tenant daemons running real apps: what it stores,
retention, tenants whose daemon is down (skipped, never started) or broken (logged, the
others still sampled), and the background task's start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from corral.panel.app import create_app
from corral.panel.config import PanelConfig
from corral.panel.db.models import MetricSample
from corral.panel.sampler import aggregate, run_sampler, sample_once
from corral.panel.services import Panel, TenantRef
from corral.panel.settings import set_setting
from corral.paths import Home
from tests.conftest import Corral, wait_for
from tests.support.panel import add_tenant, make_app, short_dir

pytestmark = pytest.mark.slow

# Touches every page of 30 MB, so the RSS really holds it, then waits.
HOLDER = "import time\nheld = b'x' * 30_000_000\nwhile True:\n    time.sleep(60)\n"
MB = 1_000_000


@pytest.fixture
def tenant_home() -> Iterator[Callable[[], Path]]:
    """Short tenant home directories (their daemons' socket paths must stay short)."""
    made: list[Path] = []

    def make() -> Path:
        made.append(short_dir("cps"))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[Callable[[Path], Corral]]:
    """Start a tenant's daemon in <home>/.corral, as the panel expects it; every one is
    stopped (with its apps) at the end, even when the test fails."""
    started: list[Corral] = []

    def start(home: Path) -> Corral:
        corral_home = Home(home / ".corral")
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "CORRAL_HOME": str(corral_home.root),
            "HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        workdir = home / "apps"
        workdir.mkdir(exist_ok=True)
        instance = Corral(home=corral_home, env=env, workdir=workdir)
        started.append(instance)
        instance.start_daemon()
        return instance

    yield start
    for instance in started:
        instance.shutdown()


@pytest.fixture
def panel(tmp_path: Path, database_url: str) -> Iterator[Panel]:
    _, made = make_app(tmp_path, database_url)
    yield made
    made.database.close()


def sampled(corral: Corral, name: str, count: int) -> bool:
    """The daemon has measured all `count` instances of `name` after they allocated their
    30 MB (memory is null before the daemon's first measurement)."""
    records = [r for r in corral.jlist() if r["name"] == name]
    return len(records) == count and all((r["memory"] or 0) > 30 * MB for r in records)


def samples(panel: Panel, tenant: TenantRef | None = None) -> list[MetricSample]:
    with panel.database.session() as db:
        stmt = select(MetricSample).order_by(MetricSample.at, MetricSample.app)
        if tenant is not None:
            stmt = stmt.where(MetricSample.tenant_id == tenant.id)
        return list(db.scalars(stmt))


def test_aggregate_sums_running_instances_per_app() -> None:
    records = [
        {"name": "web", "instance": 0, "pid": 11, "cpu": 1.25, "memory": 100},
        {"name": "web", "instance": 1, "pid": 12, "cpu": 2.5, "memory": 200},
        {"name": "web", "instance": 2, "pid": None, "cpu": None, "memory": None},
        {"name": "new", "instance": 0, "pid": 13, "cpu": None, "memory": None},
        {"name": "off", "instance": 0, "pid": None, "cpu": 0.0, "memory": 0},
    ]
    usage = aggregate(records)
    assert {name: (u.cpu, u.memory, u.instances) for name, u in usage.items()} == {
        "web": (3.75, 300, 2),
        "new": (0.0, 0, 1),  # running, not measured yet
        "off": (0.0, 0, 0),  # stopped: still a row, so the chart shows it down
    }


def test_sample_once_stores_plausible_rows_for_real_apps(
    panel: Panel, tenant_home: Callable[[], Path], daemons: Callable[[Path], Corral]
) -> None:
    home = tenant_home()
    shop = add_tenant(panel, "shop", home)
    corral = daemons(home)
    corral.start_app("web", HOLDER, instances=2)
    corral.start_app("idle", HOLDER)
    corral.call("stop", target="idle")
    wait_for(lambda: sampled(corral, "web", 2), timeout=30)

    before = time.time()
    assert sample_once(panel) == 2
    rows = {row.app: row for row in samples(panel)}
    assert set(rows) == {"web", "idle"}
    web, idle = rows["web"], rows["idle"]
    assert web.tenant_id == shop.id
    assert web.instances == 2
    assert 2 * 30 * MB < web.memory < 2 * 1000 * MB  # two interpreters holding 30 MB each
    assert 0 <= web.cpu < 400
    assert before <= web.at <= time.time()
    assert (idle.instances, idle.memory, idle.cpu) == (0, 0, 0.0)
    assert idle.at == web.at  # one pass, one time: the chart's points line up

    # Each pass adds a row per app.
    assert sample_once(panel) == 2
    assert len(samples(panel)) == 4


def test_retention_deletes_old_samples(panel: Panel, tmp_path: Path) -> None:
    shop = add_tenant(panel, "shop", tmp_path / "shop")  # no daemon: nothing sampled
    now = time.time()
    day = 86400.0
    with panel.database.session() as db:
        for age in (30 * day, 8 * day, 6 * day, 2 * 3600, 60):
            db.add(
                MetricSample(
                    tenant_id=shop.id, app="web", at=now - age, cpu=1, memory=1, instances=1
                )
            )
    assert sample_once(panel, now=now) == 0
    ages = sorted(round((now - row.at) / 3600) for row in samples(panel))
    assert ages == [0, 2, 6 * 24]  # the default keeps 7 days

    with panel.database.session() as db:
        set_setting(db, "metrics.retention", "1h")
    sample_once(panel, now=now)
    assert [round(now - row.at) for row in samples(panel)] == [60]


def test_a_down_daemon_is_skipped_and_not_started(
    panel: Panel, tenant_home: Callable[[], Path], daemons: Callable[[Path], Corral]
) -> None:
    up_home, down_home, gone_home = tenant_home(), tenant_home(), tenant_home()
    up = add_tenant(panel, "up", up_home)
    down = add_tenant(panel, "down", down_home)
    add_tenant(panel, "gone", gone_home)
    shutil.rmtree(gone_home)  # a tenant whose home has vanished
    corral = daemons(up_home)
    corral.start_app("web", HOLDER)
    wait_for(lambda: sampled(corral, "web", 1), timeout=30)

    assert sample_once(panel) == 1
    assert [(row.tenant_id, row.app) for row in samples(panel)] == [(up.id, "web")]
    assert not samples(panel, down)
    # Nothing was started for the tenants that were down: no daemon home, no socket.
    assert not (down_home / ".corral").exists()
    assert not gone_home.exists()

    # A daemon that stopped since the last pass is skipped too.
    corral.call("kill")
    wait_for(lambda: not corral._connectable())
    assert sample_once(panel) == 0
    assert not corral._connectable()


@contextlib.contextmanager
def garbage_daemon(home: Path) -> Iterator[None]:
    """A socket where a tenant's daemon should be, answering nonsense to every request."""
    root = home / ".corral"
    root.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(Home(root).socket))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"this is not json\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


def test_one_broken_tenant_does_not_stop_the_others(
    panel: Panel,
    tenant_home: Callable[[], Path],
    daemons: Callable[[Path], Corral],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken_home, good_home = tenant_home(), tenant_home()
    add_tenant(panel, "aaa-broken", broken_home)  # sampled first (tenants go by name)
    good = add_tenant(panel, "zzz-good", good_home)
    corral = daemons(good_home)
    corral.start_app("web", HOLDER)
    wait_for(lambda: sampled(corral, "web", 1), timeout=30)

    with garbage_daemon(broken_home), caplog.at_level(logging.WARNING, "corral.panel.sampler"):
        assert sample_once(panel) == 1
    assert [row.tenant_id for row in samples(panel)] == [good.id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "aaa-broken" in warnings[0]


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("corral-sampler")]


def count_samples(panel: Panel) -> tuple[int, int]:
    """(rows, distinct pass times)."""
    with panel.database.session() as db:
        rows = db.scalar(select(func.count()).select_from(MetricSample)) or 0
        passes = db.scalar(select(func.count(func.distinct(MetricSample.at)))) or 0
        return rows, passes


def test_the_sampler_runs_in_the_background_and_stops_cleanly(
    tmp_path: Path, tenant_home: Callable[[], Path], daemons: Callable[[Path], Corral]
) -> None:
    home = tenant_home()
    _, panel = make_app(tmp_path, metrics_interval_seconds=0.2)
    add_tenant(panel, "shop", home)
    corral = daemons(home)
    corral.start_app("web", HOLDER)

    async def main() -> None:
        async with run_sampler(panel):
            assert [t.get_name() for t in asyncio.all_tasks()].count("corral-sampler") == 1
            # Several passes happen, each in the worker thread, while the loop stays free.
            await asyncio.wait_for(until_passes(3), timeout=60)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    async def until_passes(wanted: int) -> None:
        while (await asyncio.to_thread(count_samples, panel))[1] < wanted:
            await asyncio.sleep(0.05)

    asyncio.run(main())
    wait_for(lambda: not sampler_threads())
    rows, passes = count_samples(panel)
    assert passes >= 3, passes
    assert rows == passes, (rows, passes)  # one app, one row per pass
    panel.database.close()


def test_create_app_runs_the_sampler_for_its_lifetime(
    tmp_path: Path, tenant_home: Callable[[], Path], daemons: Callable[[Path], Corral]
) -> None:
    home = tenant_home()
    app = create_app(PanelConfig(home=tmp_path, metrics_interval_seconds=0.2))
    panel: Panel = app.state.panel
    add_tenant(panel, "shop", home)
    corral = daemons(home)
    corral.start_app("web", HOLDER)
    with TestClient(app):
        wait_for(lambda: count_samples(panel)[1] >= 2, timeout=30)
    wait_for(lambda: not sampler_threads())
    panel.database.close()
