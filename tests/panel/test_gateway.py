"""The panel's gateway to a tenant's daemon, against real daemons running real apps.

A tenant is a home directory; its daemon runs with CORRAL_HOME=<home>/.corral. Every
daemon a test starts, itself or through the dev starter, is stopped by the fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.config.model import AppConfig
from corral.core.logtail import CUT_MARKER, MAX_LINE
from corral.panel.gateway import (
    DaemonDown,
    DevStarter,
    Follow,
    GatewayError,
    NoAutostart,
    NotFound,
    Refused,
    TenantDaemon,
)
from corral.paths import Home
from corral.protocol.wire import ErrorCode
from tests.conftest import Corral, wait_for

pytestmark = pytest.mark.slow

SERVER = """
import signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))  # stop quietly (no traceback)
print("hello out", flush=True)
print("hello err", file=sys.stderr, flush=True)
time.sleep(600)
"""

PRINTER = """
import sys, time
for i in range(300):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
print("L" * 3 * 65536)
print("last", flush=True)
sys.stderr.flush()
time.sleep(600)
"""

TICKER = """
import itertools, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
for i in itertools.count():
    print(f"tick {i}", flush=True)
    time.sleep(0.05)
"""


@dataclass
class Tenant:
    home: Path
    corral: Corral
    starter: DevStarter

    def gateway(self, **kwargs: Any) -> TenantDaemon:
        return TenantDaemon(self.home, self.starter, **kwargs)

    def app(self, name: str, code: str, **config: Any) -> dict[str, Any]:
        """An AppConfig dict as the CLI sends it, for a script in the tenant home."""
        script = self.home / f"{name}.py"
        script.write_text(code)
        config.setdefault("interpreter", sys.executable)
        config.setdefault("cwd", str(self.home))
        return AppConfig(name=name, script=str(script), **config).to_dict()


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    """A tenant home with no daemon running yet."""
    base = Path(tempfile.mkdtemp(prefix="crl-"))  # short: socket paths are limited
    home = base / "t"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CORRAL_HOME": str(home / ".corral"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    corral = Corral(home=Home(home / ".corral"), env=env, workdir=home)
    starter = DevStarter()
    try:
        yield Tenant(home, corral, starter)
    finally:
        corral._remember_daemon()  # one the dev starter spawned
        corral.shutdown()
        starter.reap()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def gw(tenant: Tenant) -> TenantDaemon:
    """A gateway to a tenant whose daemon the fixture started (never autostarts)."""
    tenant.corral.start_daemon()
    return TenantDaemon(tenant.home, NoAutostart())


def statuses(gw: TenantDaemon, name: str) -> list[str]:
    return [str(r["status"]) for r in gw.processes() if r["name"] == name]


def online(gw: TenantDaemon, name: str, count: int = 1) -> None:
    wait_for(lambda: statuses(gw, name) == ["online"] * count)


def ready(gw: TenantDaemon, name: str) -> None:
    """SERVER has set its SIGINT handler: a stop now does not print a traceback."""
    wait_for(lambda: "hello out" in lines(gw.tail(name, 5, "out"), "out"))


def lines(entries: list[dict[str, Any]], stream: str) -> list[str]:
    return [str(e["line"]) for e in entries if e["stream"] == stream]


# --- the commands ------------------------------------------------------------------------


def test_start_list_describe_and_act(tenant: Tenant, gw: TenantDaemon) -> None:
    records = gw.start([tenant.app("web", SERVER)])
    assert [(r["name"], r["instance"]) for r in records] == [("web", 0)]
    online(gw, "web")
    assert [r["name"] for r in gw.processes()] == ["web"]
    described = gw.describe("web")
    assert described["name"] == "web"
    assert described["config"]["script"] == str(tenant.home / "web.py")

    assert {r["status"] for r in gw.act("stop", "web")} == {"stopped"}
    assert statuses(gw, "web") == ["stopped"]
    gw.act("start", "web")
    online(gw, "web")
    pid = gw.processes()[0]["pid"]
    gw.act("restart", "web")
    online(gw, "web")
    restarted = gw.processes()[0]
    assert restarted["pid"] != pid and restarted["restarts"] == 1
    assert gw.act("reset", "web")[0]["restarts"] == 0
    gw.act("reload", "web")
    online(gw, "web")
    with pytest.raises(Refused) as refused:
        gw.act("start", "web")  # already running
    assert refused.value.code is ErrorCode.ALREADY_RUNNING
    with pytest.raises(Refused, match="unknown action"):
        gw.act("kill", "web")  # type: ignore[arg-type]


def test_start_with_force_applies_a_new_config(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("web", SERVER)])
    with pytest.raises(Refused):
        gw.start([tenant.app("web", SERVER)])
    gw.start([tenant.app("web", SERVER, env={"COLOR": "blue"})], force=True)
    assert gw.env("web")[0]["env"]["COLOR"] == "blue"
    assert gw.describe("web")["config"]["env"] == {"COLOR": "blue"}


def test_bad_config_is_refused_with_the_reason(tenant: Tenant, gw: TenantDaemon) -> None:
    bad = tenant.app("web", SERVER) | {"instances": -3}
    with pytest.raises(Refused) as refused:
        gw.start([bad])
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert "instances" in refused.value.message
    assert gw.processes() == []


def test_scale_up_down_and_bad_counts(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("web", SERVER)])
    assert len(gw.scale("web", "+2")) == 3
    online(gw, "web", 3)
    assert len(gw.scale("web", "1")) == 1
    assert len(gw.scale("web", "-0")) == 1
    for bad in ("", "two", "+", "1.5", "++1", "1 2"):
        with pytest.raises(Refused, match="expected N, \\+N or -N"):
            gw.scale("web", bad)
    with pytest.raises(NotFound, match="no app named 'api'"):
        gw.scale("api", "2")


def test_env_host_and_delete(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("web", SERVER, env={"GREETING": "hi"})], cli_env={"PATH": "/bin"})
    (entry,) = gw.env("web")
    assert entry["env"]["GREETING"] == "hi" and entry["env"]["PATH"] == "/bin"
    assert gw.host()["cpu_count"] >= 1
    assert gw.delete("web") == ["web"]
    assert gw.processes() == []
    with pytest.raises(NotFound):
        gw.describe("web")


def test_names_match_exactly(tenant: Tenant, gw: TenantDaemon) -> None:
    api_id = str(gw.start([tenant.app("api", SERVER)])[0]["id"])
    # An app named like the id of another: a name never means an id, `all` or a pattern.
    gw.start([tenant.app("api2", SERVER), tenant.app(api_id, SERVER)])
    assert gw.describe(api_id)["name"] == api_id
    assert gw.delete("api") == ["api"]
    assert sorted(r["name"] for r in gw.processes()) == sorted([api_id, "api2"])
    for name in ("all", "/api/", "api.*", "../x", ""):
        with pytest.raises(NotFound):
            gw.delete(name)
    assert sorted(r["name"] for r in gw.processes()) == sorted([api_id, "api2"])


def test_unknown_apps_are_not_found(gw: TenantDaemon) -> None:
    calls: list[Callable[[], object]] = [
        lambda: gw.describe("ghost"),
        lambda: gw.tail("ghost"),
        lambda: gw.flush("ghost"),
        lambda: gw.env("ghost"),
        lambda: gw.delete("ghost"),
        lambda: gw.follow("ghost", events=True),
        lambda: gw.follow("ghost", events=True, logs=False),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="no app named 'ghost'") as info:
            call()
        assert info.value.code is ErrorCode.UNKNOWN_TARGET
    with pytest.raises(NotFound, match="ghost") as info:
        gw.act("stop", "ghost")
    with pytest.raises(GatewayError) as error:  # a command this daemon does not know
        gw.call("no_such_command")
    assert type(error.value) is GatewayError
    assert error.value.code is ErrorCode.UNKNOWN_COMMAND


def test_a_missing_script_is_not_found(tenant: Tenant, gw: TenantDaemon) -> None:
    config = tenant.app("web", SERVER)
    (tenant.home / "web.py").unlink()
    with pytest.raises(NotFound, match="does not exist") as info:
        gw.start([config])
    assert info.value.code is ErrorCode.NOT_FOUND


# --- logs --------------------------------------------------------------------------------


def test_tail_streams_lines_limit_and_long_lines(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("printer", PRINTER)])
    wait_for(lambda: lines(gw.tail("printer", 1, "out"), "out") == ["last"])
    wait_for(lambda: lines(gw.tail("printer", 1, "err"), "err") == ["err 299"])

    out = gw.tail("printer", 3, "out")
    assert [e["line"] for e in out][::2] == ["out 299", "last"]
    assert out[1]["line"] == "L" * MAX_LINE + CUT_MARKER.format(size=3 * 65536)
    assert {(e["name"], e["instance"], e["stream"]) for e in out} == {("printer", 0, "out")}
    assert lines(gw.tail("printer", 2, "err"), "err") == ["err 298", "err 299"]
    both = gw.tail("printer", 1)
    assert [(e["stream"], e["line"]) for e in both] == [("out", "last"), ("err", "err 299")]
    assert len(gw.tail("printer", stream="err")) == 100  # the default
    assert len(gw.tail("printer", 10_000, "out")) == 302
    for bad in (0, 10_001, True):
        with pytest.raises(Refused, match="lines"):
            gw.tail("printer", bad)
    with pytest.raises(Refused, match="stream"):
        gw.tail("printer", 5, "stdout")  # type: ignore[arg-type]


def test_flush_clears_only_that_app(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("a", SERVER), tenant.app("b", SERVER)])
    wait_for(lambda: len(gw.tail("a")) == 2 and len(gw.tail("b")) == 2)
    flushed = gw.flush("a")
    assert sorted(Path(p).name for p in flushed) == ["a-err-0.log", "a-out-0.log"]
    assert gw.tail("a") == []
    assert lines(gw.tail("b"), "out") == ["hello out"]


# --- following ---------------------------------------------------------------------------


def collect(follow: Follow, into: list[dict[str, Any]], errors: list[BaseException]) -> None:
    try:
        for event in follow:
            into.append(event)
    except BaseException as exc:
        errors.append(exc)


def test_follow_lines_and_events_and_close_from_another_thread(
    tenant: Tenant, gw: TenantDaemon
) -> None:
    gw.start([tenant.app("web", SERVER), tenant.app("other", TICKER)])
    ready(gw, "web")
    events: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    with gw.follow("web", events=True) as follow:
        reader = threading.Thread(target=collect, args=(follow, events, errors))
        reader.start()
        gw.act("restart", "other")
        gw.act("restart", "web")
        wait_for(lambda: {"hello out", "hello err"} <= {e.get("line") for e in events})
        wait_for(lambda: any(e.get("to") == "online" for e in events))
        follow.close()  # from this thread, while the reader is blocked in recv()
        reader.join(timeout=10)
        assert not reader.is_alive()
    assert errors == []
    logs = [e for e in events if e["type"] == "log"]
    assert {(e["stream"], e["line"]) for e in logs} == {("out", "hello out"), ("err", "hello err")}
    assert all(e["name"] == "web" and e["instance"] == 0 for e in logs)
    transitions = [e for e in events if e["type"] == "transition"]
    assert transitions and all(e["name"] == "web" for e in transitions)  # not "other"
    assert follow.closed
    assert list(follow) == []


def test_follow_events_only_and_every_apps_lines(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("a", SERVER), tenant.app("b", SERVER)])
    ready(gw, "a")
    ready(gw, "b")
    with gw.follow(events=True, logs=False) as follow:
        gw.act("stop", "b")
        seen = [next(follow), next(follow)]
    assert [(e["type"], e["name"], e["to"]) for e in seen] == [
        ("transition", "b", "stopping"),
        ("transition", "b", "stopped"),
    ]
    with gw.follow(events=False) as follow:  # every app's lines, no events
        gw.act("restart", "a")
        gw.act("start", "b")
        got: set[tuple[str, str]] = set()
        while len(got) < 4:
            event = next(follow)
            assert event["type"] == "log"
            got.add((event["name"], event["line"]))
    assert got == {(n, f"hello {s}") for n in ("a", "b") for s in ("out", "err")}
    with pytest.raises(Refused, match="nothing to follow"):
        gw.follow("a", events=False, logs=False)


def test_follow_raises_daemon_down_when_the_daemon_goes(tenant: Tenant, gw: TenantDaemon) -> None:
    gw.start([tenant.app("web", SERVER)])
    follow = gw.follow("web", events=True)
    gw.call("kill")
    with pytest.raises(DaemonDown, match="stream ended"):
        for _ in follow:
            pass
    assert follow.closed


def follow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("corral-follow")]


def test_aiter_follow_stops_its_thread_when_the_consumer_stops(
    tenant: Tenant, gw: TenantDaemon
) -> None:
    gw.start([tenant.app("ticker", TICKER)])

    async def first_ticks(count: int) -> list[str]:
        ticks: list[str] = []
        async for event in gw.aiter_follow("ticker", events=False):
            ticks.append(event["line"])
            if len(ticks) == count:
                break  # the consumer stops: the subscription and its thread must end
        return ticks

    ticks = asyncio.run(first_ticks(5))
    assert len(ticks) == 5 and all(t.startswith("tick ") for t in ticks)
    numbers = [int(t.split()[1]) for t in ticks]
    assert numbers == list(range(numbers[0], numbers[0] + 5))
    wait_for(lambda: not follow_threads())

    async def cancelled() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in gw.aiter_follow("ticker", events=True):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    wait_for(lambda: not follow_threads())


def test_aiter_follow_raises_errors_in_the_consumer(gw: TenantDaemon) -> None:
    async def consume() -> None:
        async for _ in gw.aiter_follow("ghost", events=True):
            pass

    with pytest.raises(NotFound, match="no app named 'ghost'"):
        asyncio.run(consume())
    wait_for(lambda: not follow_threads())


# --- reaching and starting the daemon ----------------------------------------------------


def test_the_dev_starter_autostarts_a_daemon_once(tenant: Tenant) -> None:
    assert not tenant.corral.home.socket.exists()
    gateways = [tenant.gateway() for _ in range(4)]
    pids: list[int] = []
    errors: list[BaseException] = []

    def ping(gw: TenantDaemon) -> None:
        try:
            pids.append(int(gw.ping()["pid"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ping, args=(gw,)) for gw in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    tenant.corral._remember_daemon()
    assert errors == []
    assert len(set(pids)) == 1  # four requests at once, one daemon
    assert tenant.corral.daemon_pid() == pids[0]
    assert gateways[0].ping()["home"] == str(tenant.home / ".corral")
    assert tenant.corral.home.socket == gateways[0].socket_path
    assert (tenant.home / ".corral").stat().st_mode & 0o777 == 0o700
    assert gateways[0].processes() == []


def test_without_autostart_a_missing_daemon_is_down(tenant: Tenant) -> None:
    with pytest.raises(DaemonDown, match="not running") as info:
        TenantDaemon(tenant.home, NoAutostart()).processes()
    assert str(tenant.corral.home.socket) in info.value.message
    assert not (tenant.home / ".corral").exists()


def test_a_missing_tenant_home_is_never_created(tenant: Tenant) -> None:
    missing = tenant.home / "gone"
    with pytest.raises(DaemonDown, match="does not exist"):
        TenantDaemon(missing, tenant.starter).processes()
    assert not missing.exists()


def test_a_socket_path_too_long_is_a_clear_error(tenant: Tenant) -> None:
    deep = tenant.home / ("d" * 100)
    deep.mkdir()
    with pytest.raises(DaemonDown, match="longer than 107 bytes"):
        TenantDaemon(deep, tenant.starter).processes()


def test_a_stale_socket_refuses_then_the_starter_replaces_it(tenant: Tenant) -> None:
    home = Home(tenant.home / ".corral")
    home.ensure()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home.socket))
    stale.close()  # the file stays; connecting to it is refused
    with pytest.raises(DaemonDown, match="not running"):
        TenantDaemon(tenant.home, NoAutostart()).processes()
    assert tenant.gateway().processes() == []
    tenant.corral._remember_daemon()


def test_a_daemon_that_does_not_answer_times_out(tenant: Tenant) -> None:
    home = Home(tenant.home / ".corral")
    home.ensure()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(home.socket))
        mute.listen(8)  # accepts connections (the backlog) and never answers
        gw = TenantDaemon(tenant.home, NoAutostart(), timeout=0.2)
        with pytest.raises(DaemonDown, match="did not answer 'list'"):
            gw.processes()
        with pytest.raises(DaemonDown, match="did not answer"):
            gw.follow(events=True)


def test_gateway_errors_are_one_line_messages() -> None:
    error = Refused("app 'x' is already running", ErrorCode.ALREADY_RUNNING)
    assert str(error) == error.message == "app 'x' is already running"
    assert isinstance(error, GatewayError) and error.code is ErrorCode.ALREADY_RUNNING
    assert issubclass(DaemonDown, GatewayError) and issubclass(NotFound, GatewayError)
