"""The `configure` command: an app's stored config is replaced and nothing is restarted.

The supervisor runs on a FakeOs (launches are recorded, not executed) with a real state
file: a running instance keeps its process, the next launch gets the new config, and a
refused request changes nothing. tests/e2e/test_configure.py does it with real processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.core.app import App
from corral.core.handlers import Handlers
from corral.core.lifecycle import State
from corral.core.state_store import StateStore
from corral.core.supervisor import Supervisor
from corral.paths import Home
from corral.protocol.commands import Command
from corral.protocol.wire import ErrorCode, ProtocolError

from .fakeos import FakeOs


@dataclass
class World:
    sup: Supervisor
    fos: FakeOs
    handlers: Handlers
    state: Path

    def add(self, name: str, *, cli_env: dict[str, str] | None = None, **config: Any) -> App:
        return self.sup.add_app(
            AppConfig(name=name, script="/bin/true", **config),
            cli_env=cli_env if cli_env is not None else {},
            env_name=None,
        )

    def launch(self, app: App) -> int:
        """Start instance 0 and complete its spawn; its pid."""
        app.desired = "running"
        app.instances[0].start()
        return self.fos.complete_spawn().pid

    async def configure(self, *configs: dict[str, Any]) -> Any:
        return await self.handlers.table[Command.CONFIGURE]({"apps": list(configs)})

    async def saved_apps(self) -> dict[str, dict[str, Any]]:
        await self.sup.persisted()
        doc = json.loads(self.state.read_text())
        return {a["config"]["name"]: a for a in doc["apps"]}


def run(test: Callable[[World], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        fos = FakeOs()
        home = Home(tmp_path / "home")
        home.ensure()
        state = tmp_path / "state.json"
        sup = Supervisor(fos, home.logs, StateStore(state), loop=asyncio.get_running_loop())
        try:
            await test(World(sup, fos, Handlers(sup, home, lambda: None), state))
        finally:
            sup.channels.close_all()
            await asyncio.to_thread(sup.log_writer.close)

    asyncio.run(main())


def config_of(name: str, **fields: Any) -> dict[str, Any]:
    return AppConfig(name=name, script="/bin/true", **fields).to_dict()


async def refused(call: Awaitable[Any], code: ErrorCode) -> str:
    with pytest.raises(ProtocolError) as info:
        await call
    assert info.value.code == code
    return info.value.message


def test_a_running_instance_keeps_its_process_and_the_next_launch_gets_the_new_env(
    tmp_path: Path,
) -> None:
    async def test(w: World) -> None:
        app = w.add("api", cli_env={"FROM_CLI": "kept"}, env={"MODE": "old"})
        pid = w.launch(app)
        spawns = len(w.fos.processes)
        records = await w.configure(config_of("api", env={"MODE": "new", "EXTRA": "1"}))
        # Nothing restarted: no new spawn, no signal, the same pid in the answer.
        assert len(w.fos.processes) == spawns
        assert w.fos.last.signals == []
        assert [(r["name"], r["pid"]) for r in records] == [("api", pid)]
        assert app.instances[0].state is State.ONLINE
        assert app.config.env == {"MODE": "new", "EXTRA": "1"}
        assert app.cli_env == {"FROM_CLI": "kept"}
        # The next launch (here a crash and its automatic restart) has the new config.
        w.fos.exit(1)
        w.fos.advance(1)
        w.fos.complete_spawn()
        env = w.fos.last.spec.env
        assert env["MODE"] == "new" and env["EXTRA"] == "1" and env["FROM_CLI"] == "kept"

    run(test, tmp_path)


def test_the_new_config_is_persisted(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.add("api", env={"MODE": "old"})
        await w.configure(config_of("api", env={"MODE": "new"}))
        saved = await w.saved_apps()
        assert saved["api"]["config"]["env"] == {"MODE": "new"}

    run(test, tmp_path)


def test_a_restart_after_configure_launches_with_the_new_env(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        app = w.add("api", env={"MODE": "old"})
        w.launch(app)
        await w.configure(config_of("api", env={"MODE": "new"}))
        task = asyncio.ensure_future(w.handlers.restart({"target": "api"}))
        while not task.done():
            await asyncio.sleep(0)
            for proc in list(w.fos.processes):
                if proc.child is not None and proc.signals and not proc.exited:
                    w.fos.exit(None, signal=proc.signals[-1], proc=proc)
                elif proc.child is None:
                    w.fos.complete_spawn(proc)
        task.result()
        assert w.fos.last.spec.env["MODE"] == "new"

    run(test, tmp_path)


def test_an_unknown_app_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        app = w.add("api", env={"MODE": "old"})
        message = await refused(
            w.configure(config_of("api", env={"MODE": "new"}), config_of("ghost")),
            ErrorCode.UNKNOWN_TARGET,
        )
        assert "'ghost'" in message
        assert app.config.env == {"MODE": "old"}
        assert w.sup.by_name("ghost") is None

    run(test, tmp_path)


@pytest.mark.parametrize(
    ("apps", "needle"),
    [
        (None, "'apps'"),
        ([], "'apps'"),
        ([{"name": "api"}], "script"),
        ([{"name": "api", "script": "/bin/true", "instances": "many"}], "instances"),
    ],
)
def test_a_bad_config_is_refused_and_nothing_changes(
    tmp_path: Path, apps: Any, needle: str
) -> None:
    async def test(w: World) -> None:
        app = w.add("api", env={"MODE": "old"})
        call = w.handlers.table[Command.CONFIGURE]({"apps": apps})
        assert needle in await refused(call, ErrorCode.INVALID_ARGUMENT)
        assert app.config.env == {"MODE": "old"}

    run(test, tmp_path)


def test_the_same_app_twice_is_refused(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.add("api")
        call = w.configure(config_of("api"), config_of("api", env={"A": "1"}))
        assert "same name" in await refused(call, ErrorCode.INVALID_ARGUMENT)

    run(test, tmp_path)


def test_a_script_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        app = w.add("api", env={"MODE": "old"})
        missing = str(tmp_path / "gone.sh")
        call = w.configure(AppConfig(name="api", script=missing, env={"MODE": "new"}).to_dict())
        assert "gone.sh" in await refused(call, ErrorCode.NOT_FOUND)
        assert app.config.env == {"MODE": "old"}

    run(test, tmp_path)
