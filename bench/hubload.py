"""`python -m bench.hubload`: many simulated agents pushing metrics into one real hub.

Issue 11's load test: a real `corral hub` process (plain ws:// on 127.0.0.1: TLS is not
what is measured here, and loopback is the only place plain ws:// is allowed), buckets
made through its CLI, and N agents in this one asyncio process speaking the real protocol
(AgentHandshake, Session.seal) over real WebSockets, each pushing a server and a few apps
every `interval` seconds for `duration` seconds, on SQLite and on a throwaway PostgreSQL.

Ingest latency is measured from the database, never from the hub's say-so:
- stored: a separate process polls server_samples (new rows by id, `id > floor`) every
  `poll` seconds and notes when each row became visible to a reader, i.e. committed; the
  latency is that moment minus the agent's send time. An upper bound, coarse by the poll
  interval (plus the poller's own query time).
- received: the row's `at`, which the hub takes in its ingest thread just before writing,
  minus the send time: socket, decryption, queueing for a thread; not the commit.
A server's rows are stored in the order of its pushes (the hub handles one connection's
frames one after another), so its k-th row is its k-th push. Every clock is this
machine's time.time().

Hub CPU: psutil on the hub process, user+system over the push phase (first push until the
last push is stored), as a percentage of one core; RSS sampled every second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from corral.protocol.hub import AgentHandshake, BucketKeys, Session, derive_bucket_keys
from corral.protocol.hub.messages import MessageType

RESULTS = Path(__file__).with_name("results") / "hubload.json"
ADMIN = "bench"
ADMIN_PASSWORD = "bench load password 1"
STORE_TIMEOUT = 60.0
"""After the last push: how long every push has to show up in the database."""
GAP_SECONDS = 2.0
"""The poller skips an id missing this long (a rolled-back insert leaves a hole)."""


@dataclass(frozen=True)
class LoadSettings:
    agents: int = 500
    buckets: int = 10
    apps: int = 5
    interval: float = 5.0
    duration: float = 60.0
    poll: float = 0.02
    connect_concurrency: int = 50

    @property
    def pushes_per_agent(self) -> int:
        return max(1, int(self.duration / self.interval + 1e-9))


@dataclass
class Push:
    agent: int
    index: int
    sent_at: float


@dataclass
class Agent:
    index: int
    keys: BucketKeys
    hostname: str
    server_id: str = field(default_factory=lambda: secrets.token_hex(16))
    ws: ClientConnection | None = None
    session: Session | None = None
    pushes: list[Push] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- realistic bodies: a server and its apps, as corral/agent/collect.py makes them


def _custom(rng: random.Random) -> dict[str, Any]:
    return {
        "http_requests": {"kind": "meter", "rate": round(rng.uniform(0, 300), 2), "count": 91},
        "http_latency": {
            "kind": "histogram",
            "count": 1200,
            "sum": 48.2,
            "min": 0.002,
            "max": 0.9,
            "p50": 0.03,
            "p95": 0.12,
            "p99": 0.4,
        },
        "queue_depth": {"kind": "gauge", "value": rng.randint(0, 50)},
        "jobs_done": {"kind": "counter", "value": rng.randint(0, 10**6)},
    }


def metrics_body(agent: Agent, apps: int, rng: random.Random) -> dict[str, Any]:
    names = ["api", "web", "worker", "scheduler", "mailer", "search", "cache", "billing"]
    return {
        "sampled_at": time.time(),
        "server": {
            "hostname": agent.hostname,
            "addresses": [f"10.0.{agent.index // 250}.{agent.index % 250 + 1}", "fd00::7"],
            "load": [round(rng.uniform(0, 4), 2), 0.8, 0.6],
            "memory": {
                "total": 16 << 30,
                "available": rng.randint(2 << 30, 12 << 30),
                "swap_used": 0,
            },
            "cpu": {"count": 8, "percent": round(rng.uniform(0, 100), 1)},
        },
        "apps": [
            {
                "name": names[i % len(names)] + (str(i // len(names)) if i >= len(names) else ""),
                "id": i,
                "instance": 0,
                "status": "online",
                "cpu": round(rng.uniform(0, 50), 1),
                "memory": rng.randint(30 << 20, 800 << 20),
                "restarts": 2,
                "unstable_restarts": 0,
                "exec_mode": "cluster" if i % 2 else "fork",
                "git_revision": "9f2c1e7a" * 5,
                "custom": _custom(rng),
            }
            for i in range(apps)
        ],
    }


def hello_body(agent: Agent) -> dict[str, Any]:
    return {
        "agent_version": "bench",
        "server_id": agent.server_id,
        "hostname": agent.hostname,
        "remote_actions": False,
        "password": None,
    }


# -- the hub process and its CLI


def corral_command() -> list[str]:
    script = Path(sys.executable).with_name("corral")
    return [str(script)] if script.exists() else [sys.executable, "-m", "corral"]


def hub_cli(home: Path, url: str, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [*corral_command(), "hub", *args, "--home", str(home), "--database-url", url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"corral hub {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def create_buckets(home: Path, url: str, count: int) -> list[BucketKeys]:
    """An admin and `count` buckets, through the hub's own CLI (secrets read from it)."""
    hub_cli(home, url, "create-admin", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    keys = []
    for i in range(count):
        out = hub_cli(home, url, "create-bucket", f"load-{i:02d}", "--owner", ADMIN)
        public = re.search(r"public id:\s*(\S+)", out)
        secret = re.search(r"secret:\s*(\S+)", out)
        if public is None or secret is None:
            raise RuntimeError(f"create-bucket printed no id and secret: {out!r}")
        keys.append(derive_bucket_keys(public.group(1), secret.group(1)))
    return keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def hub_process(home: Path, url: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`corral hub serve` on a free loopback port; stopped (and reaped) at the end."""
    port = free_port()
    log_path = home / "hub.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *corral_command(),
                "hub",
                "serve",
                "--home",
                str(home),
                "--database-url",
                url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the hub exited at start:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the hub did not listen within 60 s")
            time.sleep(0.1)
        yield process, port, log_path
    finally:
        # Our own child, reaped only by wait(): its pid cannot have been reused.
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# -- watching the database from another process


def poll_samples(url: str, every: float, stop: Any, out: str) -> None:
    """Runs in its own process: when each server_samples row first became visible."""
    from sqlalchemy import text

    from corral.panel.db.engine import make_engine

    engine = make_engine(url)
    seen: dict[int, float] = {}
    floor = 0
    above: set[int] = set()
    gap_since: float | None = None
    query = text("SELECT id FROM server_samples WHERE id > :floor")
    with engine.connect() as conn:
        while True:
            stopping = stop.is_set()
            ids = [row[0] for row in conn.execute(query, {"floor": floor})]
            now = time.time()
            conn.rollback()  # a fresh snapshot for the next poll
            for row_id in ids:
                if row_id not in seen:
                    seen[row_id] = now
                    above.add(row_id)
            # PostgreSQL may commit ids out of order: keep the floor under the lowest hole.
            while floor + 1 in above:
                floor += 1
                above.discard(floor)
            if above:
                gap_since = gap_since or now
                if now - gap_since > GAP_SECONDS:
                    floor = min(above) - 1
                    gap_since = None
            else:
                gap_since = None
            if stopping:
                break
            time.sleep(every)
    engine.dispose()
    Path(out).write_text(json.dumps(seen))


# -- the agents


async def connect_agent(url: str, agent: Agent) -> None:
    ws = await connect(url, max_size=2**20, open_timeout=60)
    handshake = AgentHandshake(agent.keys)
    challenge = await ws.recv()
    assert isinstance(challenge, str)
    await ws.send(handshake.answer(challenge))
    confirm = await ws.recv()
    assert isinstance(confirm, str)
    agent.session = handshake.finish(confirm)
    agent.ws = ws
    await ws.send(agent.session.seal(MessageType.HELLO, hello_body(agent)))


async def push_loop(agent: Agent, settings: LoadSettings, start: float, sizes: list[int]) -> None:
    """Push on a fixed schedule (a slow send never shifts the next one), from a random
    offset within the first interval, as independent servers would."""
    rng = random.Random(agent.index)
    offset = rng.uniform(0, settings.interval)
    assert agent.ws is not None and agent.session is not None
    for k in range(settings.pushes_per_agent):
        await asyncio.sleep(max(0.0, start + offset + k * settings.interval - time.time()))
        frame = agent.session.seal(MessageType.METRICS, metrics_body(agent, settings.apps, rng))
        sizes.append(len(frame))
        sent_at = time.time()
        try:
            await agent.ws.send(frame)
        except ConnectionClosed as exc:
            agent.errors.append(f"push {k}: connection closed ({exc})")
            return
        agent.pushes.append(Push(agent.index, k, sent_at))


async def _gather_limited(coros: list[Any], limit: int) -> list[BaseException | None]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> BaseException | None:
        async with gate:
            try:
                await coro
            except Exception as exc:
                return exc
            return None

    return await asyncio.gather(*(one(c) for c in coros))


# -- one run


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(
            ordered[min(len(ordered) - 1, max(0, int(p * len(ordered) + 0.999999) - 1))] * 1000, 1
        )

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": rank(1.0)}


class CpuWatch:
    """CPU seconds and RSS of a process (and, for PostgreSQL, of a process tree)."""

    def __init__(self, pid: int, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.tree = tree
        self.rss_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        return [self.process, *(self.process.children(recursive=True) if self.tree else [])]

    def cpu(self) -> dict[int, float]:
        out = {}
        for proc in self._processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
        return out

    def start(self) -> CpuWatch:
        self._begin, self._t0 = self.cpu(), time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(psutil.Error):
                self.rss_max = max(self.rss_max, self.process.memory_info().rss)

    def stop(self) -> dict[str, float]:
        end, wall = self.cpu(), time.monotonic() - self._t0
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.rss_max = max(self.rss_max, self.process.memory_info().rss)
        # A process that left during the window is missed; one that came counts whole.
        used = sum(seconds - self._begin.get(pid, 0.0) for pid, seconds in end.items())
        return {
            "cpu_seconds": round(used, 2),
            "cpu_percent": round(100 * used / wall, 1),
            "rss_max_mib": round(self.rss_max / 2**20, 1),
            "seconds": round(wall, 1),
        }


async def _push_phase(
    engine: Any, live: list[Agent], settings: LoadSettings, hub_pid: int, db_pid: int | None
) -> dict[str, Any]:
    """Every agent pushes on its schedule; then wait until every push is stored. CPU is
    measured over exactly this window."""
    from sqlalchemy import text

    me = psutil.Process()
    hub_watch = CpuWatch(hub_pid).start()
    db_watch = CpuWatch(db_pid, tree=True).start() if db_pid else None
    load_cpu0 = sum(me.cpu_times()[:2])
    wall0 = time.monotonic()
    start = time.time() + 0.5
    sizes: list[int] = []
    await asyncio.gather(*(push_loop(a, settings, start, sizes) for a in live))
    sent = sum(len(a.pushes) for a in live)

    def stored_count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM server_samples")).scalar_one())

    deadline = time.monotonic() + STORE_TIMEOUT
    while (count := await asyncio.to_thread(stored_count)) < sent:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return {
        "pushes_stored": count,
        "frame_bytes_mean": round(sum(sizes) / len(sizes)) if sizes else 0,
        "hub": hub_watch.stop(),
        "database_server": db_watch.stop() if db_watch else None,
        "loadgen_cpu_percent": round(
            100 * (sum(me.cpu_times()[:2]) - load_cpu0) / (time.monotonic() - wall0), 1
        ),
    }


async def _drive(
    ws_url: str,
    db_url: str,
    keys: list[BucketKeys],
    settings: LoadSettings,
    work: Path,
    hub_pid: int,
    db_pid: int | None,
) -> dict[str, Any]:
    from sqlalchemy import text

    from corral.panel.db.engine import make_engine

    agents = [
        Agent(i, keys[i % len(keys)], f"load-{i:04d}.example.net") for i in range(settings.agents)
    ]
    t0 = time.monotonic()
    failures = await _gather_limited(
        [connect_agent(ws_url, a) for a in agents], settings.connect_concurrency
    )
    connect_seconds = time.monotonic() - t0
    connect_errors = [f"agent {i}: {exc!r}" for i, exc in enumerate(failures) if exc is not None]
    live = [a for a in agents if a.ws is not None]

    engine = make_engine(db_url)
    by_server_id = {a.server_id: a for a in live}

    def servers() -> dict[int, Agent]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, server_id FROM servers")).all()
        return {pk: by_server_id[sid] for pk, sid in rows if sid in by_server_id}

    deadline = time.monotonic() + 60
    while len(mapping := await asyncio.to_thread(servers)) < len(live):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    agent_of = {a.index: pk for pk, a in mapping.items()}

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    seen_file = work / "seen.json"
    poller = context.Process(
        target=poll_samples, args=(db_url, settings.poll, stop, str(seen_file)), daemon=True
    )
    poller.start()
    try:
        await asyncio.sleep(1.0)  # the poller's imports and first query are not measured
        measured = await _push_phase(engine, live, settings, hub_pid, db_pid)
        await asyncio.sleep(max(0.5, 3 * settings.poll))  # the poller sees the last rows too
    finally:
        stop.set()
        await asyncio.to_thread(poller.join, 60)
        if poller.is_alive():  # our own child, not yet joined: its pid is still its own
            poller.kill()
            await asyncio.to_thread(poller.join, 10)
        disconnected = [a.index for a in live if a.ws is not None and a.ws.close_code is not None]
        for a in live:
            if a.ws is not None:
                await a.ws.close()
    seen = {int(k): v for k, v in json.loads(seen_file.read_text()).items()}

    def rows() -> tuple[list[tuple[int, int, float]], int]:
        with engine.connect() as conn:
            samples = conn.execute(text("SELECT id, server_id, at FROM server_samples")).all()
            apps = conn.execute(text("SELECT count(*) FROM app_samples")).scalar_one()
        return [(int(r[0]), int(r[1]), float(r[2])) for r in samples], int(apps)

    samples, app_rows = await asyncio.to_thread(rows)
    engine.dispose()
    per_server: dict[int, list[tuple[int, float]]] = {}
    for row_id, server_pk, at in samples:
        per_server.setdefault(server_pk, []).append((row_id, at))
    stored, received, unmatched = [], [], 0
    for a in live:
        got = sorted(per_server.get(agent_of.get(a.index, -1), []))
        for push, (row_id, at) in zip(a.pushes, got, strict=False):
            received.append(at - push.sent_at)
            if row_id in seen:
                stored.append(seen[row_id] - push.sent_at)
            else:
                unmatched += 1
    return {
        "agents_connected": len(live),
        "connect_seconds": round(connect_seconds, 2),
        "connect_errors": connect_errors[:5],
        "connect_error_count": len(connect_errors),
        "servers_registered": len(mapping),
        "pushes_sent": sum(len(a.pushes) for a in live),
        "pushes_stored": measured["pushes_stored"],
        "app_samples_stored": app_rows,
        "app_samples_expected": sum(len(a.pushes) for a in live) * settings.apps,
        "push_errors": [e for a in live for e in a.errors][:5],
        "connections_closed_by_hub": len(disconnected),
        "frame_bytes_mean": measured["frame_bytes_mean"],
        "latency_stored_ms": percentiles(stored),
        "latency_received_ms": percentiles(received),
        "stored_not_seen_by_poller": unmatched,
        "hub": measured["hub"],
        "database_server": measured["database_server"],
        "loadgen_cpu_percent": measured["loadgen_cpu_percent"],
    }


def log_problems(log_path: Path) -> list[str]:
    words = ("Traceback", "ERROR", "WARNING", "locked", "QueuePool", "dropped")
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if any(w in line for w in words)]


def run_load(
    settings: LoadSettings, db_url: str, work: Path, db_pid: int | None = None
) -> dict[str, Any]:
    """One run against a fresh hub on `db_url` (an empty database); the report."""
    home = work / "hub-home"
    home.mkdir(parents=True, exist_ok=True)
    keys = create_buckets(home, db_url, settings.buckets)
    with hub_process(home, db_url) as (process, port, log_path):
        ws_url = f"ws://127.0.0.1:{port}/agent/v1"
        load0 = os.getloadavg()[0]
        report = asyncio.run(_drive(ws_url, db_url, keys, settings, work, process.pid, db_pid))
        hub_alive = process.poll() is None
    problems = log_problems(log_path)
    report.update(
        {
            "hub_alive_at_end": hub_alive,
            "hub_log_problem_lines": len(problems),
            "hub_log_problems": problems[:10],
            "loadavg_before": round(load0, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
        }
    )
    return report


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[tuple[str, int | None]]:
    """(SQLAlchemy URL, PostgreSQL postmaster pid or None) of a fresh empty database."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'hub-home' / 'hub.db'}", None
        return
    # The test suite's throw-away server (temp folder, loopback, stopped at the end).
    from tests.support.postgres import fresh_database, postgres_server

    with postgres_server() as server, fresh_database(server, "hubload") as url:
        yield url, server.process.pid


def print_table(results: dict[str, dict[str, Any]]) -> None:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("pushes stored / sent", lambda r: f"{r['pushes_stored']} / {r['pushes_sent']}"),
        (
            "app samples / expected",
            lambda r: f"{r['app_samples_stored']} / {r['app_samples_expected']}",
        ),
        ("connect (s), errors", lambda r: f"{r['connect_seconds']}, {r['connect_error_count']}"),
        ("closed by hub", lambda r: str(r["connections_closed_by_hub"])),
        (
            "stored p50 / p99 (ms)",
            lambda r: f"{r['latency_stored_ms']['p50']} / {r['latency_stored_ms']['p99']}",
        ),
        ("stored max (ms)", lambda r: str(r["latency_stored_ms"]["max"])),
        (
            "received p50 / p99 (ms)",
            lambda r: f"{r['latency_received_ms']['p50']} / {r['latency_received_ms']['p99']}",
        ),
        ("hub CPU (% of a core)", lambda r: str(r["hub"]["cpu_percent"])),
        ("hub RSS max (MiB)", lambda r: str(r["hub"]["rss_max_mib"])),
        (
            "PostgreSQL CPU (%)",
            lambda r: str(r["database_server"]["cpu_percent"]) if r["database_server"] else "-",
        ),
        ("load generator CPU (%)", lambda r: str(r["loadgen_cpu_percent"])),
        ("hub log problems", lambda r: str(r["hub_log_problem_lines"])),
    ]
    kinds = list(results)
    print(f"{'':26}" + "".join(f"{k:>20}" for k in kinds))
    for label, cell in rows:
        print(f"{label:26}" + "".join(f"{cell(results[k]):>20}" for k in kinds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.hubload", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--buckets", type=int, default=10)
    ap.add_argument("--apps", type=int, default=5, help="apps per simulated server")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between pushes")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of pushing")
    ap.add_argument("--poll", type=float, default=0.02, help="the database poller's period")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    if ns.agents < 1 or ns.buckets < 1 or ns.interval <= 0 or ns.duration < ns.interval:
        ap.error("need --agents >= 1, --buckets >= 1, --interval > 0, --duration >= --interval")
    settings = LoadSettings(
        agents=ns.agents,
        buckets=min(ns.buckets, ns.agents),
        apps=ns.apps,
        interval=ns.interval,
        duration=ns.duration,
        poll=ns.poll,
    )
    kinds = ["sqlite", "postgresql"] if ns.db == "both" else [ns.db]
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        work = Path(tempfile.mkdtemp(prefix="crl-hubload-"))
        try:
            what = f"{settings.agents} agents every {settings.interval:g} s"
            print(f"hubload: {kind}: {what} for {settings.duration:g} s ...", flush=True)
            with database(kind, work) as (url, db_pid):
                results[kind] = run_load(settings, url, work, db_pid)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(
        json.dumps(
            {
                "settings": asdict(settings),
                "transport": "ws:// on 127.0.0.1 (no TLS)",
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
