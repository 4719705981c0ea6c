"""The supervisor: every app of one daemon, and the operations the control protocol asks for.

It owns the apps and their instances, turns lifecycle transitions into events, keeps
the state file current, and runs the per-app helpers (watch, cron, memory limit). All of
it runs on the event loop; anything that blocks (disk, psutil) goes to a thread.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from corral.config.model import AppConfig
from corral.core.app import App
from corral.core.app_metrics import AppMetrics
from corral.core.app_sockets import AppSockets
from corral.core.channels import InstanceChannels
from corral.core.cron import CronSchedule
from corral.core.events import EventBus
from corral.core.launch import build_launch_spec, release_dir
from corral.core.lifecycle import Instance, State, Transition
from corral.core.logcapture import InstanceOutput, LineFormat
from corral.core.logrotate import RotationPolicy
from corral.core.logwriter import LogWriter
from corral.core.osapi import LaunchSpec, OsApi, OutputSink
from corral.core.sampler import HostSample, TreeSample, TreeSampler, own_rss
from corral.core.settings import Settings
from corral.core.state_store import StateStore
from corral.core.targets import resolve_many
from corral.core.waiters import StateWaiters
from corral.core.watcher import AppWatcher
from corral.protocol.wire import ErrorCode, ProtocolError
from corral.secrets.errors import SecretError

if TYPE_CHECKING:
    from corral.secrets.store import SecretInfo, SecretStore

log = logging.getLogger("corral.supervisor")


class _Sampled(NamedTuple):
    pid: int
    at: float
    """Loop time of the reading."""
    sample: TreeSample


SETTLED = frozenset({State.STOPPED, State.ERRORED})
STARTED = frozenset({State.ONLINE, State.ERRORED, State.STOPPED, State.WAITING_RESTART})
SAMPLE_INTERVAL = 2.0
"""Seconds between passes while someone looks at the figures (a client asked for them in
the last WATCH_WINDOW seconds: `ls`, `monit`, `describe`, the metrics endpoint), and for
the apps with `max_memory_restart` at all times."""
IDLE_SAMPLE_INTERVAL = 15.0
"""Seconds between passes over every app while nobody looks (SPEC 1.9: sampling is cheap):
the daemon's idle CPU is mostly this."""
WATCH_WINDOW = 5.0
FIRST_PASS_DELAY = 1.0
"""The first pass waits this long after the daemon starts: a cold `corral start` is served
first (the pass imports psutil and reads every process, ~15 ms of the loop's time).
Until then, `current_host` reads the host figures on demand."""
STALE_AFTER = 3.0
"""A figure older than this is read again when a client asks for it (one /proc read per
process of the tree, on the loop), so `ls` always shows current figures, even after a
quiet spell."""
RESCAN_INTERVAL = 10.0
IDLE_RESCAN_INTERVAL = 30.0
"""At most this often (watched / not), a pass rescans the host's processes for new tree
members and counts open fds; the passes in between only re-read the known members."""
STATE_VERSION = 1


class Supervisor:
    def __init__(
        self,
        os_api: OsApi,
        logs_dir: Path,
        store: StateStore | None,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: Settings | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.os = os_api
        self.secrets = secrets
        """The daemon's secrets store, loaded (None: no secrets at all, as in unit tests)."""
        self.secrets_problem: str | None = None
        """Why the store could not be loaded: every launch is refused until it can be, since
        nobody can tell which apps would start without the secrets they need."""
        self.settings = settings or Settings(logs_dir.parent / "settings.json")  # tests
        self.logs_dir = logs_dir
        self.deploys_root = logs_dir.parent / "deploys"
        """`<home>/deploys`: a git app runs from `<name>/current` there (SPEC 4)."""
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        """Run first by `shutdown` (the deploy manager cancels its builds)."""
        self.store = store
        self.loop = loop
        self.events = EventBus()
        self.log_writer = LogWriter()
        self.apps: dict[int, App] = {}
        self._names: dict[str, App] = {}  # by_name in O(1): starting 1000 apps looks up each
        self._samples: dict[tuple[int, int], _Sampled] = {}
        self._next_id = 0
        self._waiters = StateWaiters(loop)
        self._watchers: dict[int, AppWatcher] = {}
        self._crons: dict[int, CronSchedule] = {}
        self._outputs: dict[tuple[int, int], InstanceOutput] = {}
        self._sampler = TreeSampler()
        self._last_pass = -float("inf")  # loop time of the last pass over every app
        self._last_rescan = -float("inf")
        self._watched_until = -float("inf")
        self._wake = asyncio.Event()
        self._persist_wanted = False
        self._persist_task: asyncio.Task[None] | None = None
        self._sample_task: asyncio.Task[None] | None = None
        self._log_subscribers = 0
        self.sockets = AppSockets()
        self.channels = InstanceChannels(loop, on_metric=self._on_metric)
        self.app_metrics: dict[tuple[int, int], AppMetrics] = {}
        self._host: HostSample | None = None
        self._candidates: set[Instance] = set()

    # ============================================================== lookups

    def by_name(self, name: str) -> App | None:
        return self._names.get(name)

    def resolve(self, targets: Iterable[str]) -> list[App]:
        return resolve_many(list(targets), self.apps.values())

    def ordered(self) -> list[App]:
        return [self.apps[i] for i in sorted(self.apps)]

    # ============================================================ app table

    def add_app(
        self,
        config: AppConfig,
        *,
        cli_env: dict[str, str] | None,
        env_name: str | None,
        app_id: int | None = None,
        created_at: float | None = None,
    ) -> App:
        if self.by_name(config.name) is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"an app named {config.name!r} exists")
        if app_id is None:
            app_id = self._next_id
        self._next_id = max(self._next_id, app_id + 1)
        app = App(
            id=app_id,
            config=config,
            cli_env=self._without_secrets(config, cli_env),
            env_name=env_name,
            created_at=created_at if created_at is not None else self.os.wall(),
        )
        self.apps[app_id] = app
        self._names[app.name] = app
        self._resize(app, config.instances)
        self.persist()
        return app

    def replace_config(
        self,
        app: App,
        config: AppConfig,
        *,
        cli_env: dict[str, str] | None,
        env_name: str | None,
        update_env: bool,
    ) -> None:
        """A new configuration takes effect at the next launch of each instance."""
        self._set_config(app, config)
        if update_env:
            app.cli_env = self._without_secrets(config, cli_env)
            app.env_name = env_name
        self.persist()

    def _set_config(self, app: App, config: AppConfig) -> None:
        """Configs are replaced, never changed in place (App.to_state relies on it)."""
        if config.name != app.name and self._names.get(app.name) is app:
            del self._names[app.name]
            self._names[config.name] = app
        app.config = config
        for inst in app.instances.values():
            inst.config = config

    async def delete(self, app: App) -> None:
        await self.stop(app)
        await self._stop_helpers(app)
        for number in list(app.instances):
            self._forget_instance(app, number)
        del self.apps[app.id]
        if self._names.get(app.name) is app:
            del self._names[app.name]
        self.events.forget(app.name)
        self.events.publish({"type": "deleted", "name": app.name, "id": app.id})
        self.persist()

    # ============================================================ operations

    def awaiting_release(self, app: App) -> bool:
        """A git app with no release yet: it is not launched until its first deploy, which
        starts it if it is meant to run (one stat on the loop)."""
        return app.config.git is not None and release_dir(self.deploys_root, app.name) is None

    async def start(self, app: App) -> None:
        app.desired = "running"
        if not app.instances:
            self._resize(app, max(1, app.config.instances))
        if self.awaiting_release(app):
            self.persist()
            return
        for inst in app.sorted_instances():
            inst.start()
        self._start_helpers(app)
        self.persist()
        await self.wait(app.instances.values(), STARTED)

    async def stop(self, app: App) -> None:
        app.desired = "stopped"
        await self._stop_helpers(app)
        for inst in app.sorted_instances():
            inst.stop()
        self.persist()
        await self.wait(app.instances.values(), SETTLED)
        if app.desired == "stopped":  # not started again meanwhile
            self.sockets.close(app.id)

    async def restart(self, app: App, reason: str = "restart") -> None:
        app.desired = "running"
        self._resize(app, max(1, app.config.instances))
        if self.awaiting_release(app):
            self.persist()
            return
        for inst in app.sorted_instances():
            inst.restart(reason)
        self._start_helpers(app)
        self.persist()
        await self.wait(app.instances.values(), STARTED)

    async def reload(self, app: App, parallel: int | None = None) -> None:
        """Replace every instance without downtime (SPEC 1.6); raise ProtocolError if a
        replacement does not become ready: the instances not yet replaced keep serving."""
        if app.config.reload_mode == "restart" or self.awaiting_release(app):
            await self.restart(app, "reload")
            return
        app.desired = "running"
        self._start_helpers(app)
        batch_size = max(1, parallel or app.config.reload_parallel)
        olds = app.sorted_instances()
        for start in range(0, len(olds), batch_size):
            batch = olds[start : start + batch_size]
            failures = [
                why for why in await asyncio.gather(*(self._replace(app, o) for o in batch)) if why
            ]
            if failures:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"reload of {app.name!r} failed: {'; '.join(failures)}; "
                    "the old instances keep serving",
                )
        # The config may ask for more or fewer instances than were running.
        wanted = max(1, app.config.instances)
        if len(app.instances) != wanted:
            await self.scale(app, wanted)
        self.persist()

    async def _replace(self, app: App, old: Instance) -> str | None:
        """Start a replacement for `old`, wait until it is ready, then stop `old`.
        Returns why it failed, or None."""
        if old.state is not State.ONLINE:
            old.restart("reload")  # nothing is being served by it: no need to overlap
            await self.wait([old], STARTED)
            return None
        new = self._new_instance(app, old.number)
        new.candidate = True
        new.restarts = old.restarts + 1
        new.unstable_restarts = old.unstable_restarts
        self._candidates.add(new)
        try:
            new.start("reload")
            why = await self._until_ready(new)
            if why is not None:
                new.stop("reload failed")
                await self.wait([new], SETTLED)
                return f"instance {old.number}: {why}"
        finally:
            self._candidates.discard(new)
        new.candidate = False
        app.instances[old.number] = new
        self.persist()
        old.stop("replaced by reload")
        await self.wait([old], SETTLED)
        return None

    async def started_problem(self, app: App) -> str | None:
        """After a start: why an instance is not serving (as a reload judges a
        replacement), or None when every one is."""
        instances = app.sorted_instances()
        problems = await asyncio.gather(*(self._until_ready(inst) for inst in instances))
        found = [
            f"instance {inst.number}: {why}"
            for inst, why in zip(instances, problems, strict=True)
            if why
        ]
        return "; ".join(found) or None

    async def _until_ready(self, inst: Instance) -> str | None:
        """Ready: READY=1 or a health check when configured, else up for min_uptime."""
        cfg = inst.config
        await self.wait([inst], frozenset(State) - {State.LAUNCHING}, cfg.listen_timeout + 5)
        if inst.state is not State.ONLINE:
            return inst.error or (
                inst.last_exit.describe() if inst.last_exit else f"it is {inst.state}"
            )
        if not inst.needs_ready:
            child = inst.child
            await asyncio.sleep(min(cfg.min_uptime, cfg.listen_timeout))
            if inst.state is not State.ONLINE or inst.child is not child:
                return inst.error or (
                    inst.last_exit.describe() if inst.last_exit else "it did not stay up"
                )
        return None

    async def scale(self, app: App, count: int) -> None:
        if count < 1:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, "an app needs at least 1 instance")
        current = len(app.instances)
        self._set_config(app, dataclasses.replace(app.config, instances=count))
        if count > current:
            added = self._resize(app, count)
            if app.desired == "running" and not self.awaiting_release(app):
                for inst in added:
                    inst.start("scale")
                await self.wait(added, STARTED)
        elif count < current:
            # Scaling down stops the highest numbers, gracefully.
            doomed = [app.instances[n] for n in sorted(app.instances)[count:]]
            for inst in doomed:
                inst.stop("scale")
            await self.wait(doomed, SETTLED)
            for inst in doomed:
                del app.instances[inst.number]
                self._forget_instance(app, inst.number)
        self.persist()

    def reset(self, app: App) -> None:
        for inst in app.instances.values():
            inst.reset_counters()
        self.persist()

    async def wait(
        self, instances: Iterable[Instance], states: frozenset[State], timeout: float = 60.0
    ) -> None:
        """Wait until every instance is in one of `states` (or the timeout passes)."""
        await self._waiters.wait(instances, states, timeout)

    # ============================================================ instances

    def _resize(self, app: App, count: int) -> list[Instance]:
        added = []
        for number in app.free_numbers(max(0, count - len(app.instances))):
            inst = self._new_instance(app, number)
            app.instances[number] = inst
            added.append(inst)
        return added

    def _new_instance(self, app: App, number: int) -> Instance:
        return Instance(
            app.name, number, app.config, self.os, self._launcher(app), self._on_transition
        )

    def _launcher(self, app: App) -> Callable[[Instance], tuple[LaunchSpec, OutputSink]]:
        def launch(inst: Instance) -> tuple[LaunchSpec, OutputSink]:
            # Decrypted here, for this one exec, and nowhere else. A SecretError (a
            # ValueError) makes the instance errored with its message: nothing is spawned.
            secrets = self.secret_environment(app.name, app.config.secrets)
            fds, names = self.sockets.fds_for(app.id, app.config)
            spec = build_launch_spec(
                app.config,
                instance=inst.number,
                cli_env=app.cli_env,
                env_name=app.env_name,
                secrets=secrets,
                extra_env=self.channels.open(inst),
                listen_fds=fds,
                listen_names=names,
                release=release_dir(self.deploys_root, app.name) if app.config.git else None,
            )
            return spec, self._output_for(app, inst.number)

        return launch

    # ============================================================ secrets

    def secret_environment(self, name: str, required: Sequence[str]) -> dict[str, str]:
        """The app's secrets in clear, all or nothing, for one launch (SPEC 3).

        Raises SecretError, whose message names the app and the variable but never a
        value, when the store could not be loaded, a `required` name is not set, or a
        secret does not decrypt (tampered, moved, wrong key).
        """
        if self.secrets_problem is not None:
            raise SecretError(f"the secrets of app {name!r} cannot be read: {self.secrets_problem}")
        store = self.secrets
        missing = [n for n in required if store is None or not store.has(name, n)]
        if missing:
            raise SecretError(missing_secrets_message(name, missing))
        return store.environment(name) if store is not None else {}

    def _without_secrets(
        self, config: AppConfig, cli_env: dict[str, str] | None
    ) -> dict[str, str] | None:
        """The CLI's environment minus the app's secret names. The secret replaces such a
        variable in the child anyway, and a copy kept with the app would be in clear in
        the state file and in dumps (a secret also exported in the shell that ran start)."""
        if not cli_env:
            return cli_env
        names = set(config.secrets) | {info.name for info in self.secret_names(config.name)}
        if names.isdisjoint(cli_env):
            return cli_env
        return {key: value for key, value in cli_env.items() if key not in names}

    def forget_cli_value(self, app_name: str, variable: str) -> None:
        """A secret was just set: drop a stored CLI variable of that name (see above)."""
        app = self.by_name(app_name)
        if app is not None and app.cli_env and variable in app.cli_env:
            app.cli_env = {k: v for k, v in app.cli_env.items() if k != variable}
            self.persist()

    def secret_names(self, name: str) -> list[SecretInfo]:
        """The app's secrets (names and times, never values)."""
        if self.secrets is None or self.secrets_problem is not None:
            return []
        return self.secrets.names(name)

    def _output_for(self, app: App, number: int) -> InstanceOutput:
        cfg = app.config
        out_path, err_path = app.log_paths(self.logs_dir, number)
        policy = self.rotation_policy(cfg)
        for path in (out_path, err_path):
            self.log_writer.set_policy(path, policy)
        output = InstanceOutput(
            self.loop,
            self.log_writer,
            out_path,
            err_path,
            line_format=LineFormat(
                timestamp_format=cfg.log_date_format,
                json_app=cfg.name if cfg.log_type == "json" else None,
                json_instance=number,
            ),
            on_line=self._log_publisher(app.name, number),
        )
        self._outputs[(app.id, number)] = output
        return output

    def _log_publisher(self, name: str, number: int) -> Callable[[str, bytes], None]:
        """Live lines for `logs --follow`: decoded incrementally, so that a character cut
        between two reads is not mangled."""
        decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for stream in ("out", "err")
        }

        def on_line(stream: str, data: bytes) -> None:
            if not self._log_subscribers:
                return  # nobody follows: decoding a flood would cost the log path dearly
            text = decoders[stream].decode(data)
            if text:
                self.events.publish(
                    {
                        "type": "log",
                        "name": name,
                        "instance": number,
                        "stream": stream,
                        "data": text,
                    }
                )

        return on_line

    def rotation_policy(self, cfg: AppConfig) -> RotationPolicy:
        """The app's own log settings where it has them, the daemon's otherwise."""
        settings = self.settings
        return RotationPolicy(
            max_size=settings["logs.max_size"] if cfg.log_max_size is None else cfg.log_max_size,
            retain=settings["logs.retain"] if cfg.log_retain is None else cfg.log_retain,
            compress=settings["logs.compress"] if cfg.log_compress is None else cfg.log_compress,
        )

    def apply_log_settings(self) -> None:
        """After `corral set logs.*`: every log file follows the new defaults."""
        for app in self.apps.values():
            policy = self.rotation_policy(app.config)
            for number in app.instances:
                for path in app.log_paths(self.logs_dir, number):
                    self.log_writer.set_policy(path, policy)

    def log_dropped(self, app: App, number: int) -> int:
        output = self._outputs.get((app.id, number))
        return output.dropped_bytes if output is not None else 0

    def _forget_instance(self, app: App, number: int) -> None:
        """An instance is gone for good (scale down, delete): let go of its log files.

        Its pipes close by themselves at EOF; closing them early would lose the last lines.
        """
        self._outputs.pop((app.id, number), None)
        self.app_metrics.pop((app.id, number), None)
        for path in app.log_paths(self.logs_dir, number):
            self.log_writer.release(path)

    def _on_transition(self, change: Transition) -> None:
        inst = change.origin
        if inst is not None:
            self._waiters.changed(inst)
            if change.reason == "spawned":
                self.channels.spawned(inst)
            elif change.new in (State.STOPPED, State.ERRORED, State.WAITING_RESTART):
                self.channels.exited(inst)
        app = self.by_name(change.app)
        self.events.publish(
            {
                "type": "transition",
                "name": change.app,
                "id": app.id if app else None,
                "instance": change.instance,
                "from": str(change.old),
                "to": str(change.new),
                "reason": change.reason,
                "pid": change.pid,
                "at": change.at,
            }
        )
        level = logging.WARNING if change.new is State.ERRORED else logging.INFO
        log.log(
            level,
            "%s[%d] %s -> %s (%s)",
            change.app,
            change.instance,
            change.old,
            change.new,
            change.reason,
        )
        self.persist()

    # ============================================================ helpers

    def _start_helpers(self, app: App) -> None:
        cfg = app.config
        if cfg.watch and app.id not in self._watchers:
            watcher = AppWatcher(
                cfg.watch,
                cfg.ignore_watch,
                cfg.watch_delay,
                lambda paths: self._spawn_restart(
                    app, f"watch: {paths[0] if paths else '?'} changed"
                ),
            )
            watcher.start()
            self._watchers[app.id] = watcher
        if cfg.cron_restart and app.id not in self._crons:
            cron = CronSchedule(
                cfg.cron_restart, self.loop, lambda: self._spawn_restart(app, "cron_restart")
            )
            cron.start()
            self._crons[app.id] = cron

    async def _stop_helpers(self, app: App) -> None:
        cron = self._crons.pop(app.id, None)
        if cron is not None:
            cron.cancel()
        watcher = self._watchers.pop(app.id, None)
        if watcher is not None:
            await watcher.stop()

    def _spawn_restart(self, app: App, reason: str) -> None:
        if app.id in self.apps and app.desired == "running":
            log.info("restarting %s: %s", app.name, reason)
            for inst in app.sorted_instances():
                if inst.state in (State.ONLINE, State.LAUNCHING):
                    inst.restart(reason)

    # ============================================================ sampling
    #
    # Every app's process tree is sampled every SAMPLE_INTERVAL while a client looks at
    # the figures, every IDLE_SAMPLE_INTERVAL otherwise; apps with max_memory_restart are
    # checked every SAMPLE_INTERVAL regardless. A client asking for figures (sample_of,
    # host, daemon_rss) is what counts as looking.

    def start_sampling(self) -> None:
        self._sample_task = self.loop.create_task(self._sample_loop())

    async def _sample_loop(self) -> None:
        await asyncio.sleep(FIRST_PASS_DELAY)
        while True:
            try:
                if self._everything_due():
                    await self.sample_once()
                else:
                    await self._sample_memory_limited()
            except Exception:  # a bug here must not end sampling (and memory limits)
                log.exception("sampling failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_pass_in())

    def _watched(self) -> bool:
        return self.loop.time() < self._watched_until

    def _everything_due(self) -> bool:
        interval = SAMPLE_INTERVAL if self._watched() else IDLE_SAMPLE_INTERVAL
        return self.loop.time() - self._last_pass >= interval - 0.05

    def _next_pass_in(self) -> float:
        if self._watched() or any(
            app.config.max_memory_restart is not None for app in self.apps.values()
        ):
            return SAMPLE_INTERVAL
        return max(0.0, self._last_pass + IDLE_SAMPLE_INTERVAL - self.loop.time())

    def _note_demand(self) -> None:
        """A client wants figures: sample fast for WATCH_WINDOW, starting now if the
        figures are from the idle pace."""
        now = self.loop.time()
        self._watched_until = now + WATCH_WINDOW
        if now - self._last_pass > SAMPLE_INTERVAL:
            self._wake.set()

    def _owners(self, *, memory_limited_only: bool = False) -> dict[int, tuple[App, Instance]]:
        return {
            inst.pid: (app, inst)
            for app in self.apps.values()
            if not memory_limited_only or app.config.max_memory_restart is not None
            for inst in app.instances.values()
            if inst.pid is not None
        }

    async def sample_once(self) -> None:
        """One pass over every app's tree, the host and the daemon itself."""
        now = self.loop.time()
        self._last_pass = now
        every = RESCAN_INTERVAL if self._watched() else IDLE_RESCAN_INTERVAL
        rescan = now - self._last_rescan >= every - 0.05
        if rescan:
            self._last_rescan = now
        owners = self._owners()
        trees, self._host = await asyncio.to_thread(self._sample_everything, list(owners), rescan)
        self._store(owners, trees, replace=True)

    async def _sample_memory_limited(self) -> None:
        """Between the idle passes: only the apps with max_memory_restart."""
        owners = self._owners(memory_limited_only=True)
        if not owners:
            return
        trees = await asyncio.to_thread(
            self._sampler.sample, list(owners), rescan=False, count_fds=False, prune=False
        )
        self._store(owners, trees, replace=False)

    def _store(
        self,
        owners: dict[int, tuple[App, Instance]],
        trees: dict[int, TreeSample],
        *,
        replace: bool,
    ) -> None:
        at = self.loop.time()
        samples = {} if replace else self._samples
        for pid, sample in trees.items():
            app, inst = owners[pid]
            if inst.pid != pid:
                continue  # restarted while we sampled
            samples[(app.id, inst.number)] = _Sampled(pid, at, sample)
            limit = app.config.max_memory_restart
            if limit is not None and sample.rss > limit and inst.state is State.ONLINE:
                inst.restart(f"memory {sample.rss} bytes over max_memory_restart {limit}")
        self._samples = samples

    def _sample_everything(
        self, pids: list[int], rescan: bool
    ) -> tuple[dict[int, TreeSample], HostSample]:
        """One pass in a worker thread: the apps' trees and the host."""
        trees = self._sampler.sample(pids, rescan=rescan, count_fds=rescan)
        return trees, self._sampler.host_sample()

    async def current_host(self) -> HostSample:
        """The host figures of the last pass; before the first, read now, off the loop."""
        self._note_demand()
        if self._host is not None:
            return self._host
        return await asyncio.to_thread(self._sampler.host_sample)

    @property
    def daemon_rss(self) -> int:
        """The daemon's own RSS, read now (one small /proc read)."""
        self._note_demand()
        return own_rss()

    def known_sample(self, app: App, inst: Instance) -> TreeSample | None:
        """The instance's last figures if they are of its current process; no reading."""
        entry = self._samples.get((app.id, inst.number))
        if entry is None or inst.pid is None or entry.pid != inst.pid:
            return None
        return entry.sample

    def sample_of(self, app: App, inst: Instance) -> TreeSample | None:
        """The instance's tree figures; read now if the last pass is older than
        STALE_AFTER (nobody looked for a while) or has not seen this process yet."""
        self._note_demand()
        pid = inst.pid
        if pid is None:
            return None
        key = (app.id, inst.number)
        entry = self._samples.get(key)
        current = entry is not None and entry.pid == pid
        if entry is not None and current and self.loop.time() - entry.at <= STALE_AFTER:
            return entry.sample
        # A few /proc reads on the loop (no rescan, fds as last counted); if a pass holds
        # the sampler right now, the figures it is taking will do for the next ask.
        fresh = self._sampler.sample(
            [pid], rescan=False, count_fds=False, prune=False, wait=False
        ).get(pid)
        if fresh is None:
            return entry.sample if entry is not None and current else None
        self._samples[key] = _Sampled(pid, self.loop.time(), fresh)
        return fresh

    # ============================================================ app metrics

    def _on_metric(self, inst: Instance, spec: str) -> None:
        app = self.by_name(inst.app)
        if app is None:
            return
        metrics = self.app_metrics.setdefault((app.id, inst.number), AppMetrics())
        problem = metrics.apply(spec, self.os.wall())
        if problem is not None:
            log.debug("%s[%d]: metric refused: %s", inst.app, inst.number, problem)

    def metrics_of(self, app: App, inst: Instance) -> dict[str, Any]:
        metrics = self.app_metrics.get((app.id, inst.number))
        return metrics.snapshot(self.os.wall()) if metrics is not None else {}

    # ============================================================ logs

    def subscribe_logs(self, delta: int) -> None:
        self._log_subscribers += delta

    # ============================================================ persistence

    def snapshot(self) -> dict[str, Any]:
        apps = []
        for app in self.ordered():
            record = app.to_state()
            record["instances"] = [
                {
                    "number": inst.number,
                    "pid": inst.child.pid if inst.child else None,
                    "start_time": inst.child.start_time if inst.child else None,
                    "restarts": inst.restarts,
                    "unstable_restarts": inst.unstable_restarts,
                }
                # A reload's replacement is listed too: a daemon killed mid-reload leaves it
                # running, and the next daemon must stop it like any other leftover.
                for inst in [*app.sorted_instances(), *self._candidates_of(app)]
            ]
            apps.append(record)
        return {"version": STATE_VERSION, "next_id": self._next_id, "apps": apps}

    def _candidates_of(self, app: App) -> list[Instance]:
        return [inst for inst in self._candidates if inst.app == app.name]

    def persist(self) -> None:
        """Ask for the state file to be rewritten; writes are coalesced and off-loop."""
        if self.store is None:
            return
        self._persist_wanted = True
        if self._persist_task is None or self._persist_task.done():
            self._persist_task = self.loop.create_task(self._persist_loop())

    async def _persist_loop(self) -> None:
        assert self.store is not None
        while self._persist_wanted:
            self._persist_wanted = False
            data = self.snapshot()
            try:
                await asyncio.to_thread(self.store.save, data)
            except OSError as exc:
                log.error("cannot write the state file: %s", exc)

    async def persisted(self) -> None:
        """Wait until every change so far is on disk (replies come after their writes)."""
        task = self._persist_task
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def flush_state(self) -> None:
        if self._persist_task is not None:
            await self._persist_task
        if self.store is not None:
            await asyncio.to_thread(self.store.save, self.snapshot())

    # ============================================================ shutdown

    async def shutdown(self) -> None:
        """Stop every app gracefully but keep what each app should be (for the restore)."""
        for hook in self.shutdown_hooks:
            try:
                await hook()
            except Exception:  # stopping the apps matters more
                log.exception("shutdown hook failed")
        desired = {app.id: app.desired for app in self.apps.values()}
        grace = max((app.config.kill_timeout for app in self.apps.values()), default=0.0)
        for app in self.apps.values():
            await self._stop_helpers(app)
            for inst in app.instances.values():
                inst.stop("daemon shutdown")
        everyone = [inst for app in self.apps.values() for inst in app.instances.values()]
        for inst in self._candidates:
            inst.stop("daemon shutdown")
        everyone.extend(self._candidates)
        await self.wait(everyone, SETTLED, timeout=grace + 3.0)
        for inst in everyone:
            inst.kill()
        self.channels.close_all()
        self.sockets.close_all()
        for app in self.apps.values():
            app.desired = desired[app.id]
        if self._sample_task is not None:
            self._sample_task.cancel()
        await self.flush_state()
        await asyncio.to_thread(self.log_writer.close)

    def pid_list(self) -> list[int]:
        return [
            inst.pid
            for app in self.apps.values()
            for inst in app.instances.values()
            if inst.pid is not None
        ]


def missing_secrets_message(app: str, missing: Sequence[str]) -> str:
    """`app 'api' needs secret DB_PASSWORD, which is not set: corral secret set api ...`"""
    names = ", ".join(missing)
    which = "which is" if len(missing) == 1 else "which are"
    plural = "" if len(missing) == 1 else "s"
    return (
        f"app {app!r} needs secret{plural} {names}, {which} not set: "
        f"corral secret set {app} {missing[0]}"
    )
