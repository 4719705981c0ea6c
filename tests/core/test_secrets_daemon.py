"""Secrets in the daemon (SPEC 3): the protocol commands, decryption at launch only, refusals.

The supervisor runs on a FakeOs (launches are recorded, not executed) with a real
SecretStore in a temporary home: the exec environment each launch would get is checked
directly. tests/e2e/test_secrets.py does the same with real processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.core.app import App
from corral.core.handlers import SECRET_MASK, Handlers
from corral.core.lifecycle import State
from corral.core.supervisor import Supervisor
from corral.paths import Home
from corral.protocol.commands import Command
from corral.protocol.wire import ErrorCode, ProtocolError
from corral.secrets.store import SecretStore

from .fakeos import FakeOs


@dataclass
class World:
    sup: Supervisor
    fos: FakeOs
    handlers: Handlers
    home: Home

    @property
    def store(self) -> SecretStore:
        assert self.sup.secrets is not None
        return self.sup.secrets

    def add(self, name: str, **config: Any) -> App:
        return self.sup.add_app(
            AppConfig(name=name, script="/bin/true", **config), cli_env={}, env_name=None
        )

    def launch(self, app: App) -> dict[str, str] | None:
        """Start instance 0; the environment it was exec'd with, or None if nothing was."""
        before = len(self.fos.processes)
        inst = app.instances[0]
        inst.start()
        if len(self.fos.processes) == before:
            return None
        self.fos.complete_spawn()
        assert inst.state is State.ONLINE
        return self.fos.last.spec.env

    async def reopen_store(self) -> None:
        """What a daemon restart does: a new store, loaded from the files."""
        store = SecretStore(self.home.root, tenant="", environ={})
        self.sup.secrets, self.sup.secrets_problem = store, None
        try:
            await asyncio.to_thread(store.load)
        except Exception as exc:
            self.sup.secrets_problem = str(exc)

    async def set(self, app: str, name: str, value: str) -> Any:
        return await self.handlers.secret_set({"app": app, "name": name, "value": value})


def run(test: Callable[[World], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        fos = FakeOs()
        home = Home(tmp_path / "home")
        home.ensure()
        sup = Supervisor(fos, home.logs, None, loop=asyncio.get_running_loop())
        world = World(sup, fos, Handlers(sup, home, lambda: None), home)
        await world.reopen_store()
        try:
            await test(world)
        finally:
            sup.channels.close_all()
            await asyncio.to_thread(sup.log_writer.close)

    asyncio.run(main())


def new_value() -> str:
    return "v-" + secrets.token_hex(16)


def forms(value: str) -> list[str]:
    """The value as it could leak: plain, base64 and hex."""
    data = value.encode()
    return [value, base64.b64encode(data).decode(), data.hex()]


def assert_nowhere(value: str, *things: Any) -> None:
    text = json.dumps(things, default=str)
    for form in forms(value):
        assert form not in text


async def refused(call: Awaitable[Any], code: ErrorCode) -> str:
    with pytest.raises(ProtocolError) as info:
        await call
    assert info.value.code == code
    return info.value.message


async def drive(world: World, call: Awaitable[Any]) -> Any:
    """Run a handler that waits for launches, completing each spawn as it comes."""
    task = asyncio.ensure_future(call)
    while not task.done():
        await asyncio.sleep(0)
        for proc in world.fos.processes:
            if proc.child is None:
                world.fos.complete_spawn(proc)
    return task.result()


# --- Launch: decrypted into the exec environment, nowhere else ---


def test_a_launch_gets_the_secret_after_the_app_env(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        value = new_value()
        reply = await w.set("api", "DB_PASSWORD", value)
        assert reply["app"] == "api" and reply["name"] == "DB_PASSWORD"
        assert isinstance(reply["set_at"], float)
        app = w.add("api", env={"DB_PASSWORD": "from-config", "OTHER": "1"})
        env = w.launch(app)
        assert env is not None
        assert env["DB_PASSWORD"] == value and env["OTHER"] == "1"
        assert env["CORRAL_APP"] == "api"
        assert_nowhere(value, reply)

    run(test, tmp_path)


def test_set_again_applies_at_the_next_launch_and_remove_too(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        first, second = new_value(), new_value()
        await w.set("api", "TOKEN", first)
        app = w.add("api")
        assert (w.launch(app) or {})["TOKEN"] == first
        await w.set("api", "TOKEN", second)
        w.fos.exit(1)  # a crash: the restart decrypts again
        w.fos.advance(1)
        w.fos.complete_spawn()
        assert w.fos.last.spec.env["TOKEN"] == second
        assert await w.handlers.secret_remove({"app": "api", "name": "TOKEN"}) == {"removed": True}
        assert await w.handlers.secret_remove({"app": "api", "name": "TOKEN"}) == {"removed": False}
        w.fos.exit(1)
        w.fos.advance(1)
        w.fos.complete_spawn()
        assert "TOKEN" not in w.fos.last.spec.env

    run(test, tmp_path)


def test_a_needed_secret_that_is_not_set_errors_the_instance(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        app = w.add("api", secrets=["DB_PASSWORD"])
        assert w.launch(app) is None
        inst = app.instances[0]
        assert inst.state is State.ERRORED
        assert inst.error is not None
        assert "'api'" in inst.error and "DB_PASSWORD" in inst.error and "not set" in inst.error

    run(test, tmp_path)


def _flip_ciphertext(home: Home, app: str, name: str) -> None:
    path = home.root / "secrets.json"
    doc = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(doc["secrets"][app][name]["ct"]))
    raw[0] ^= 0x01
    doc["secrets"][app][name]["ct"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(doc))


def test_a_tampered_ciphertext_errors_that_app_only(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        await w.set("api", "DB_PASSWORD", new_value())
        value = new_value()
        await w.set("web", "TOKEN", value)
        _flip_ciphertext(w.home, "api", "DB_PASSWORD")
        await w.reopen_store()
        api, web = w.add("api"), w.add("web")
        assert w.launch(api) is None
        error = api.instances[0].error or ""
        assert "DB_PASSWORD" in error and "api" in error and "decrypt" in error
        assert (w.launch(web) or {})["TOKEN"] == value

    run(test, tmp_path)


def test_a_ciphertext_moved_to_another_app_does_not_decrypt(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        value = new_value()
        await w.set("api", "TOKEN", value)
        path = w.home.root / "secrets.json"
        doc = json.loads(path.read_text())
        doc["secrets"]["evil"] = {"TOKEN": doc["secrets"]["api"]["TOKEN"]}
        path.write_text(json.dumps(doc))
        await w.reopen_store()
        evil = w.add("evil")
        assert w.launch(evil) is None
        assert "TOKEN" in (evil.instances[0].error or "")
        assert_nowhere(value, evil.instances[0].error)

    run(test, tmp_path)


def test_an_unreadable_secrets_file_stops_every_launch_until_fixed(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        await w.set("api", "TOKEN", new_value())
        path = w.home.root / "secrets.json"
        good = path.read_text()
        path.write_text("{not json")
        await w.reopen_store()
        assert w.sup.secrets_problem is not None
        plain = w.add("plain")
        assert w.launch(plain) is None
        assert "cannot be read" in (plain.instances[0].error or "")
        message = await refused(w.set("api", "X", "1"), ErrorCode.CONFLICT)
        assert "not valid JSON" in message
        assert path.read_text() == "{not json"  # never overwritten
        path.write_text(good)
        listed = await w.handlers.secret_list({"app": None})
        assert [(s["app"], s["name"]) for s in listed] == [("api", "TOKEN")]
        assert w.sup.secrets_problem is None
        assert w.launch(w.add("plain2")) is not None

    run(test, tmp_path)


def test_a_key_file_fixed_while_the_daemon_runs_is_read_again_at_the_next_start(
    tmp_path: Path,
) -> None:
    async def test(w: World) -> None:
        await w.set("api", "TOKEN", new_value())
        key = w.home.root / "secret.key"
        key.chmod(0o644)  # readable by others: refused
        await w.reopen_store()
        assert w.store.key_problem is not None
        cfg = AppConfig(name="api", script="/bin/true")
        request = {"apps": [cfg.to_dict()], "cli_env": {}}
        message = await refused(w.handlers.start(request), ErrorCode.CONFLICT)
        assert "secret.key" in message
        key.chmod(0o600)  # fixed: no secret command, no daemon restart needed
        records = await drive(w, w.handlers.start(request))
        assert {r["status"] for r in records} == {"online"}
        assert w.store.key_problem is None

    run(test, tmp_path)


# --- start / restart / reload are refused up front ---


def test_start_of_a_config_whose_secret_is_missing_is_refused(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        cfg = AppConfig(name="api", script="/bin/true", secrets=["DB_PASSWORD"])
        other = AppConfig(name="ok", script="/bin/true")
        request = {"apps": [other.to_dict(), cfg.to_dict()], "cli_env": {}}
        message = await refused(w.handlers.start(request), ErrorCode.CONFLICT)
        assert "'api'" in message and "DB_PASSWORD" in message
        assert "corral secret set api DB_PASSWORD" in message
        assert w.sup.apps == {} and w.fos.processes == []  # nothing changed
        await w.set("api", "DB_PASSWORD", new_value())
        records = await drive(w, w.handlers.start(request))
        assert {r["status"] for r in records} == {"online"}

    run(test, tmp_path)


def test_start_restart_reload_of_an_app_with_a_tampered_secret_are_refused(
    tmp_path: Path,
) -> None:
    async def test(w: World) -> None:
        await w.set("api", "TOKEN", new_value())
        app = w.add("api")
        assert w.launch(app) is not None
        _flip_ciphertext(w.home, "api", "TOKEN")
        await w.reopen_store()
        spawned = len(w.fos.processes)
        for call in (w.handlers.restart, w.handlers.reload):
            message = await refused(call({"target": "api"}), ErrorCode.CONFLICT)
            assert "TOKEN" in message and "api" in message
        message = await refused(
            w.handlers.start({"target": "api", "force": True}), ErrorCode.CONFLICT
        )
        assert "TOKEN" in message
        assert len(w.fos.processes) == spawned
        assert app.instances[0].state is State.ONLINE  # the running one keeps serving

    run(test, tmp_path)


# --- What the daemon shows: names, never values ---


def test_describe_lists_a_needed_secret_that_is_not_set(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        await w.set("api", "TOKEN", new_value())
        w.add("api", secrets=["TOKEN", "MISSING"])
        (described,) = await w.handlers.describe({"target": "api"})
        by_name = {s["name"]: s["set_at"] for s in described["secrets"]}
        assert set(by_name) == {"MISSING", "TOKEN"}
        assert by_name["MISSING"] is None and isinstance(by_name["TOKEN"], float)

    run(test, tmp_path)


def test_nothing_shows_a_value(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        value = new_value()
        await w.set("api", "TOKEN", value)
        cfg = AppConfig(name="api", script="/bin/true", env={"TOKEN": "x"}, secrets=["TOKEN"])
        records = await drive(w, w.handlers.start({"apps": [cfg.to_dict()], "cli_env": {}}))
        assert records[0]["status"] == "online"
        assert w.fos.last.spec.env["TOKEN"] == value
        (entry,) = await w.handlers.env({"target": "api"})
        assert entry["env"]["TOKEN"] == SECRET_MASK
        (described,) = await w.handlers.describe({"target": "api"})
        assert [s["name"] for s in described["secrets"]] == ["TOKEN"]
        saved = await w.handlers.save({"force": False})
        assert_nowhere(
            value,
            entry,
            described,
            await w.handlers.secret_list({"app": None}),
            await w.handlers.list_processes({}),
            w.sup.snapshot(),
            Path(saved["path"]).read_text(),
            w.sup.events.recent("api"),
        )

    run(test, tmp_path)


def test_the_log_says_which_secret_changed_never_its_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(w: World) -> None:
        value = new_value()
        await w.set("api", "TOKEN", value)
        await w.handlers.secret_remove({"app": "api", "name": "TOKEN"})

    with caplog.at_level(logging.INFO, logger="corral.secrets"):
        run(test, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert "secret TOKEN of api set" in messages
    assert "secret TOKEN of api removed" in messages


# --- Arguments ---


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"app": "api", "name": "1BAD", "value": "x"}, "'name'"),
        ({"app": "api", "name": "A=hunter2-x", "value": "x"}, "'name'"),
        ({"app": "bad name", "name": "A", "value": "x"}, "'app'"),
        ({"app": "api", "name": "A"}, "must be a string"),
        ({"app": "api", "name": "A", "value": 3}, "must be a string"),
        ({"app": "api", "name": "A", "value": "hunter2-x\0"}, "NUL"),
        ({"app": "api", "name": "A", "value": "hunter2-x" * 8000}, "at most 65536"),
        ({"app": "api", "name": "A", "value": "hunter2-x\udc80"}, "UTF-8"),
    ],
)
def test_bad_secret_arguments(tmp_path: Path, args: dict[str, Any], fragment: str) -> None:
    async def test(w: World) -> None:
        message = await refused(w.handlers.secret_set(args), ErrorCode.BAD_REQUEST)
        assert fragment in message and "hunter2" not in message
        assert not (w.home.root / "secrets.json").exists()

    run(test, tmp_path)


def test_secret_list_checks_its_app(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        await refused(w.handlers.secret_list({"app": 3}), ErrorCode.BAD_REQUEST)
        assert await w.handlers.secret_list({}) == []

    run(test, tmp_path)


def test_secrets_outlive_their_app(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        value = new_value()
        await w.set("api", "TOKEN", value)
        app = w.add("api")
        await w.sup.delete(app)
        assert [s["name"] for s in await w.handlers.secret_list({"app": "api"})] == ["TOKEN"]
        assert (w.launch(w.add("api")) or {})["TOKEN"] == value

    run(test, tmp_path)


def test_rotate_key_keeps_every_value(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        values = {"A": new_value(), "B": new_value()}
        for name, value in values.items():
            await w.set("api", name, value)
        old_kid = json.loads((w.home.root / "secrets.json").read_text())["secrets"]["api"]["A"][
            "kid"
        ]
        reply = await w.handlers.secret_rotate({})
        assert reply["rotated"] == 2 and reply["key_id"] != old_kid
        await w.reopen_store()
        env = w.launch(w.add("api")) or {}
        assert (env["A"], env["B"]) == (values["A"], values["B"])

    run(test, tmp_path)


def test_rotate_without_a_key_is_a_clear_error(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        message = await refused(w.handlers.secret_rotate({}), ErrorCode.CONFLICT)
        assert "key" in message

    run(test, tmp_path)


def test_the_master_key_never_enters_a_stored_cli_environment(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        cfg = AppConfig(name="api", script="/bin/true")
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        cli_env = {"PATH": "/bin", "CORRAL_SECRET_KEY": key}
        await drive(w, w.handlers.start({"apps": [cfg.to_dict()], "cli_env": cli_env}))
        app = w.sup.by_name("api")
        assert app is not None and app.cli_env == {"PATH": "/bin"}
        assert "CORRAL_SECRET_KEY" not in w.fos.last.spec.env
        assert key not in json.dumps(w.sup.snapshot())

    run(test, tmp_path)


def test_every_command_has_a_handler(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        missing = {str(c) for c in Command} - set(w.handlers.table) - {Command.SUBSCRIBE}
        assert missing == set()
        for cmd in ("secret_set", "secret_list", "secret_remove", "secret_rotate"):
            assert cmd in w.handlers.table

    run(test, tmp_path)


def test_a_cli_variable_named_like_a_secret_is_never_stored_with_the_app(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        shell = new_value()  # what the shell that ran start exported
        await w.set("api", "TOKEN", new_value())
        api = w.sup.add_app(
            AppConfig(name="api", script="/bin/true", secrets=["DB"]),
            cli_env={"TOKEN": shell, "DB": shell, "HOME": "/root"},
            env_name=None,
        )
        assert api.cli_env == {"HOME": "/root"}  # the secret's names are left out
        other = w.sup.add_app(
            AppConfig(name="web", script="/bin/true"),
            cli_env={"KEY": shell, "HOME": "/root"},
            env_name=None,
        )
        await w.set("web", "KEY", new_value())  # set after the app was started
        assert other.cli_env == {"HOME": "/root"}
        assert shell not in json.dumps(w.sup.snapshot())  # what the state file holds

    run(test, tmp_path)
