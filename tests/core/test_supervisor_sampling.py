"""The supervisor's sampling pace: slow while nobody looks, fast while a client does, on
demand when a figure is stale, and always fast for apps with max_memory_restart.

The supervisor runs on a FakeOs; its instances are made to own real sleeping processes
(started here, killed and waited for here), so the figures are read from /proc for real.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from corral.config.model import AppConfig
from corral.core import supervisor as supmod
from corral.core.app import App
from corral.core.lifecycle import Instance, State
from corral.core.osapi import Child
from corral.core.supervisor import Supervisor

from .fakeos import FakeOs

Sleepers = Callable[[], int]


def _rss(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rindex(b")") + 2 :].split()[21]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def sleeper() -> Iterator[Sleepers]:
    """Starts `sleep 60` processes; kills and reaps them after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        proc = subprocess.Popen(["sleep", "60"])
        started.append(proc)
        # Right after exec, and before the kernel runs it (a loaded machine), the process
        # has no pages yet: an RSS of 0 would pass any memory limit. Wait for it to run.
        deadline = time.monotonic() + 30
        while _rss(proc.pid) < 64 * 1024:
            assert time.monotonic() < deadline, "sleep never started running"
            time.sleep(0.001)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()  # not reaped yet: the pid is still ours
        proc.wait()


def run(test: Callable[[Supervisor, FakeOs], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        fos = FakeOs()
        sup = Supervisor(fos, tmp_path / "logs", None, loop=asyncio.get_running_loop())
        try:
            await test(sup, fos)
        finally:
            sup.channels.close_all()
            await asyncio.to_thread(sup.log_writer.close)

    asyncio.run(main())


def online(sup: Supervisor, fos: FakeOs, name: str, pid: int, **config: object) -> Instance:
    """An app whose instance 0 is online with the real process `pid`."""
    config_ = AppConfig(name=name, script="/bin/true", **config)  # type: ignore[arg-type]
    app = sup.add_app(config_, cli_env={}, env_name=None)
    inst = app.instances[0]
    inst.start()
    proc = fos.last
    proc.child = Child(pid, 0.0)
    proc.on_spawned(proc.child)
    assert inst.state is State.ONLINE
    return inst


def app_of(sup: Supervisor, inst: Instance) -> App:
    app = sup.by_name(inst.app)
    assert app is not None
    return app


def test_idle_pace_until_a_client_asks_then_fast(tmp_path: Path, sleeper: Sleepers) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        online(sup, fos, "api", sleeper())
        await sup.sample_once()
        assert not sup._watched()
        assert sup._next_pass_in() == pytest.approx(supmod.IDLE_SAMPLE_INTERVAL, abs=0.5)
        assert not sup._everything_due()

        assert await sup.current_host() is not None  # a client asked for figures
        assert sup._watched()
        assert sup._next_pass_in() == supmod.SAMPLE_INTERVAL

    run(test, tmp_path)


def test_a_client_asking_after_a_quiet_spell_wakes_the_sampler(
    tmp_path: Path, sleeper: Sleepers
) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        inst = online(sup, fos, "api", sleeper())
        await sup.sample_once()
        sup._last_pass -= supmod.IDLE_SAMPLE_INTERVAL / 2  # the last pass is 5 s old
        sup._wake.clear()
        sup.sample_of(app_of(sup, inst), inst)
        assert sup._wake.is_set()
        assert sup._everything_due()  # fast pace now: a pass over everything is due

    run(test, tmp_path)


def test_sample_of_reads_a_stale_or_new_tree_on_demand(tmp_path: Path, sleeper: Sleepers) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        inst = online(sup, fos, "api", sleeper())
        app = app_of(sup, inst)
        first = sup.sample_of(app, inst)  # never sampled: read now
        assert first is not None and first.processes == 1 and first.rss > 0

        await sup.sample_once()
        passed = sup.sample_of(app, inst)
        assert passed is not None
        assert sup.sample_of(app, inst) is passed  # fresh: the pass's figures

        key = (app.id, inst.number)
        sup._samples[key] = sup._samples[key]._replace(at=sup.loop.time() - 60)
        again = sup.sample_of(app, inst)
        assert again is not None and again is not passed and again.rss > 0
        assert sup._samples[key].at > sup.loop.time() - 1

    run(test, tmp_path)


def test_a_figure_of_a_previous_process_is_not_shown(tmp_path: Path, sleeper: Sleepers) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        inst = online(sup, fos, "api", sleeper())
        app = app_of(sup, inst)
        await sup.sample_once()
        key = (app.id, inst.number)
        assert inst.pid is not None
        sup._samples[key] = sup._samples[key]._replace(pid=inst.pid + 1)  # restarted since
        sample = sup.sample_of(app, inst)
        assert sample is not None and sup._samples[key].pid == inst.pid

    run(test, tmp_path)


def test_daemon_rss_is_read_when_asked(tmp_path: Path) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        assert sup.daemon_rss > 10 * 2**20  # a Python process with corral imported
        assert sup._watched()

    run(test, tmp_path)


def test_memory_limited_apps_are_checked_between_idle_passes(
    tmp_path: Path, sleeper: Sleepers
) -> None:
    async def test(sup: Supervisor, fos: FakeOs) -> None:
        plain = online(sup, fos, "plain", sleeper())
        limited = online(sup, fos, "limited", sleeper(), max_memory_restart=4096)
        await sup.sample_once()
        assert limited.state is State.STOPPING  # over its limit: restarted
        assert sup._next_pass_in() == supmod.SAMPLE_INTERVAL  # not the idle pace
        before = dict(sup._samples)
        plain_key = (app_of(sup, plain).id, plain.number)

        fos.exit(0, proc=fos.processes[1])  # the stop completes; the restart spawns
        assert limited.state is State.LAUNCHING  # type: ignore[comparison-overlap]
        fos.last.child = Child(sleeper(), 0.0)
        fos.last.on_spawned(fos.last.child)
        assert limited.state is State.ONLINE

        await sup._sample_memory_limited()
        assert limited.state is State.STOPPING  # still over its limit: restarted again
        assert sup._samples[plain_key] is before[plain_key]  # the others were left alone

    run(test, tmp_path)
