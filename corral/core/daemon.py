"""The daemon's entry point: `python -m corral.core.daemon` (started on demand by the CLI).

One daemon per home, guaranteed by an exclusive flock held for the daemon's whole life.
On start it stops whatever a killed predecessor left running (matched by pid *and*
start time), restores the apps from the state file, then opens the control socket.
SIGTERM/SIGINT stop every app gracefully, persist the state and exit 0; SIGUSR2
reopens the log files.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # Start-up builds ~100k objects and frees almost none: collections during the imports
    # are wasted time on the path of `corral start`. run() freezes what start-up built
    # (so later collections skip it) and enables the collector again.
    gc.disable()

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from corral.config.errors import ConfigError
from corral.config.schema import app_from_dict
from corral.core import metrics_server
from corral.core.atomic import write_atomic
from corral.core.daemonlog import setup_logging
from corral.core.handlers import Handlers
from corral.core.orphans import stop_orphans
from corral.core.realos import RealOs
from corral.core.server import ControlServer
from corral.core.settings import Settings
from corral.core.state_store import StateStore
from corral.core.supervisor import Supervisor
from corral.core.tenancy import TenancyError, TenantMode
from corral.paths import Home
from corral.secrets import SecretError, SecretStore

log = logging.getLogger("corral.daemon")


def acquire_lock(home: Home) -> int | None:
    """The lock fd (kept open for the daemon's life), or None if a daemon already runs."""
    fd = os.open(home.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def restore(sup: Supervisor, state: dict[str, Any]) -> None:
    """Recreate the apps of the state file; start those that were meant to run."""
    to_start = []
    for record in state.get("apps", []):
        try:
            config = app_from_dict(record["config"])
            app = sup.add_app(
                config,
                cli_env=record.get("cli_env"),
                env_name=record.get("env_name"),
                app_id=int(record["id"]),
                created_at=float(record.get("created_at", sup.os.wall())),
            )
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            log.error("state file: cannot restore an app (%s); it is left out", exc)
            continue
        for saved in record.get("instances", []):
            inst = app.instances.get(saved.get("number"))
            if inst is not None:
                inst.restarts = int(saved.get("restarts", 0))
                inst.unstable_restarts = int(saved.get("unstable_restarts", 0))
        if record.get("desired") == "running":
            to_start.append(app)
    await asyncio.gather(*(sup.start(app) for app in to_start))


async def stop_leftovers(state: dict[str, Any]) -> None:
    """Stop the processes a killed daemon left behind, so that nothing runs twice."""
    groups: dict[tuple[int, float], list[tuple[int, float]]] = {}
    for record in state.get("apps", []):
        config = record.get("config", {})
        try:
            signum = int(signal.Signals[config.get("kill_signal", "SIGINT")])
            timeout = float(config.get("kill_timeout", 1.6))
        except (KeyError, TypeError, ValueError):
            signum, timeout = signal.SIGTERM, 1.6
        for inst in record.get("instances", []):
            pid, start_time = inst.get("pid"), inst.get("start_time")
            if isinstance(pid, int) and isinstance(start_time, (int, float)):
                groups.setdefault((signum, timeout), []).append((pid, float(start_time)))
    results = await asyncio.gather(
        *(
            asyncio.to_thread(stop_orphans, records, signum, timeout)
            for (signum, timeout), records in groups.items()
        )
    )
    stopped = [pid for pids in results for pid in pids]
    if stopped:
        log.warning("stopped %d processes left by a previous daemon: %s", len(stopped), stopped)


TENANT_ENV = "CORRAL_TENANT"
"""The tenant this daemon serves (set by the panel for tenant daemons), bound into every
secret's associated data."""


def tenant_label(home: Home, environ: Mapping[str, str]) -> str:
    """CORRAL_TENANT if given (the panel gives it), remembered in the home so that a daemon
    the tenant later starts from a shell, without it, binds its secrets the same way; else
    the remembered one; else "" (a home of no tenant). Blocking: call it in a thread."""
    given = environ.get(TENANT_ENV, "")
    try:
        remembered: str | None = home.tenant_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        remembered = None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", home.tenant_file, exc)
        remembered = None
    if not given:
        return remembered or ""
    if remembered is None:
        try:
            write_atomic(home.tenant_file, given.encode("utf-8") + b"\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", home.tenant_file, exc)
    elif remembered != given:
        log.warning(
            "%s=%r but this home was %r's: secrets set under the other name will not decrypt",
            TENANT_ENV,
            given,
            remembered,
        )
    return given


async def open_secrets(home: Home) -> tuple[SecretStore, str | None]:
    """The daemon's secrets store, loaded off the loop; with why it could not be, if so."""
    environ = dict(os.environ)
    tenant = await asyncio.to_thread(tenant_label, home, environ)
    store = SecretStore(home.root, tenant=tenant, environ=environ)
    try:
        await asyncio.to_thread(store.load)
    except (SecretError, OSError) as exc:
        log.error("secrets: %s; no app is started until this is fixed", exc)
        return store, str(exc)
    return store, None


class MetricsEndpoint:
    """The Prometheus endpoint, following the `metrics.port` / `metrics.host` settings."""

    def __init__(self, settings: Settings, handlers: Handlers) -> None:
        self._settings = settings
        self._handlers = handlers
        self._server: metrics_server.MetricsServer | None = None

    async def apply(self) -> None:
        await self.close()
        port = int(self._settings["metrics.port"])
        if not port:
            return
        host = str(self._settings["metrics.host"])
        server = metrics_server.MetricsServer(host, port, self._render)
        try:
            await server.start()
        except (OSError, ValueError) as exc:
            log.error("cannot serve metrics on %s:%d: %s", host, port, exc)
            return
        self._server = server
        log.info("metrics on http://%s:%d/metrics", host, server.port)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def _render(self) -> bytes:
        from corral.core.prometheus import render  # only when the endpoint is on

        return render(await self._handlers.metrics_snapshot())


async def run(home: Home, tenant: TenantMode) -> int:
    loop = asyncio.get_running_loop()
    store = StateStore(home.state)
    settings = Settings(home.settings)
    for problem in await asyncio.to_thread(settings.load):
        log.error("settings: %s", problem)
    secrets, secrets_problem = await open_secrets(home)
    sup = Supervisor(RealOs(loop), home.logs, store, loop=loop, settings=settings, secrets=secrets)
    sup.secrets_problem = secrets_problem
    state = await asyncio.to_thread(store.load)
    if store.last_error:
        log.error("state file: %s", store.last_error)
    if state:
        await stop_leftovers(state)
        await restore(sup, state)
    if 0 <= tenant.app_limit < len(sup.apps):
        # They were admitted under an earlier, higher limit: lowering it stops nothing.
        log.warning(
            "this home holds %d apps, over its app limit of %d: no app can be added until"
            " some are deleted",
            len(sup.apps),
            tenant.app_limit,
        )

    done = asyncio.Event()
    handlers = Handlers(sup, home, done.set, tenant)
    metrics = MetricsEndpoint(settings, handlers)
    handlers.on_metrics_settings = metrics.apply
    await metrics.apply()
    server = ControlServer(home.socket, handlers, sup, tenant)
    await server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    loop.add_signal_handler(signal.SIGUSR2, sup.log_writer.reopen_all)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    sup.start_sampling()
    await handlers.agent.start()  # the hub link, if this daemon is linked
    log.info("daemon %d ready on %s", os.getpid(), home.socket)
    _settle_memory()

    await done.wait()
    log.info("shutting down")
    await asyncio.sleep(0.05)  # let the reply to `kill` reach the client
    await server.close()
    await handlers.agent.close()
    await metrics.close()
    await sup.shutdown()
    log.info("stopped")
    return 0


def _settle_memory() -> None:
    """After start-up: move what it built (modules, classes, the loop) out of the
    collector's sight for good, and let it run again (see gc.disable() above). No full
    collection first: it would take ~10 ms just as the first request arrives.
    Nothing to do when the collector was left on (run() called in-process, by a test)."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


def refuse_to_start(home: Home, why: str) -> int:
    """Say why in the daemon's log (and on stderr) and return exit status 2. The home is
    created if missing but not re-moded: without a valid panel gid, tightening it could
    lock the panel out for good."""
    message = f"refusing to start: {why} (a tenant daemon never runs unconfined)"
    print(f"corral daemon: {message}", file=sys.stderr)
    try:
        home.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        writer = setup_logging(home)
    except OSError:
        return 2
    log.error("%s", message)
    writer.stop()
    return 2


def main() -> int:
    home = Home.from_env()
    # Hold no directory busy: the CLI spawns the daemon from wherever it runs.
    os.chdir("/")
    try:
        tenant = TenantMode.from_env(os.environ)
    except TenancyError as exc:
        return refuse_to_start(home, str(exc))
    home.ensure(tenant.panel_gid)
    lock_fd = acquire_lock(home)
    if lock_fd is None:
        return 0  # another daemon owns this home
    os.umask(0o022)
    # A log file over RLIMIT_FSIZE must fail the write (EFBIG, counted as dropped), not kill
    # the daemon. Children get the default back (subprocess restores SIGXFSZ).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log_writer = setup_logging(home)
    home.pid_file.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(run(home, tenant))
    except Exception:
        log.exception("daemon crashed")
        return 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            home.pid_file.unlink()
        log_writer.stop()
        os.close(lock_fd)


if __name__ == "__main__":
    sys.exit(main())
