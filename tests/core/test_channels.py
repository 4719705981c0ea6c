"""InstanceChannels: what an instance says on its notify socket reaches its lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import os

from corral import client
from corral.config.model import AppConfig
from corral.core.channels import InstanceChannels
from corral.core.lifecycle import Instance, State, Transition
from corral.core.osapi import LaunchSpec

from .fakeos import FakeOs, NullOutput


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def make(fos: FakeOs, channels: InstanceChannels, **overrides: object) -> Instance:
    config = AppConfig(name="web", script="/bin/true", **overrides)  # type: ignore[arg-type]
    env: dict[str, str] = {}

    def launcher(inst: Instance) -> tuple[LaunchSpec, NullOutput]:
        env.update(channels.open(inst))
        return LaunchSpec(argv=["/bin/true"], env=dict(env), cwd="/"), NullOutput()

    def emit(change: Transition) -> None:
        if change.reason == "spawned" and change.origin is not None:
            channels.spawned(change.origin)

    return Instance("web", 0, config, fos, launcher, emit)


def test_ready_sent_before_the_spawn_completed_is_kept_and_checked() -> None:
    async def main() -> State:
        channels = InstanceChannels(asyncio.get_running_loop())
        fos = FakeOs()
        fos._pids = itertools.count(os.getpid())  # this test process plays the child
        inst = make(fos, channels, wait_ready=True)
        inst.start()
        address = fos.last.spec.env["NOTIFY_SOCKET"]
        os.environ["NOTIFY_SOCKET"] = address
        try:
            assert client.ready()  # before the daemon knows the pid
        finally:
            del os.environ["NOTIFY_SOCKET"]
        await asyncio.sleep(0.05)
        assert inst.state is State.LAUNCHING
        fos.complete_spawn()  # now the pid is known: the early READY=1 counts
        channels.close_all()
        return inst.state

    assert run(main) is State.ONLINE


def test_an_early_message_from_a_stranger_is_dropped_once_the_pid_is_known() -> None:
    async def main() -> State:
        channels = InstanceChannels(asyncio.get_running_loop())
        fos = FakeOs()  # the child will get pid 100, not ours
        inst = make(fos, channels, wait_ready=True)
        inst.start()
        os.environ["NOTIFY_SOCKET"] = fos.last.spec.env["NOTIFY_SOCKET"]
        try:
            assert client.ready()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        await asyncio.sleep(0.05)
        fos.complete_spawn()
        channels.close_all()
        return inst.state

    assert run(main) is State.LAUNCHING


def test_status_and_watchdog_from_the_instance() -> None:
    async def main() -> tuple[str | None, int]:
        channels = InstanceChannels(asyncio.get_running_loop())
        fos = FakeOs()
        fos._pids = itertools.count(os.getpid())
        inst = make(fos, channels, watchdog=5.0)
        inst.start()
        fos.complete_spawn()
        os.environ["NOTIFY_SOCKET"] = fos.last.spec.env["NOTIFY_SOCKET"]
        try:
            client.status("warming up")
            fos.advance(4.0)
            client.watchdog()
            await asyncio.sleep(0.05)
            fos.advance(4.0)  # 8 s after start, but 4 s after the ping: still alive
        finally:
            del os.environ["NOTIFY_SOCKET"]
        channels.close_all()
        return inst.status_text, len(fos.processes)

    assert run(main) == ("warming up", 1)
