"""Control-protocol commands -> supervisor operations. Every argument is validated here:
a request is untrusted input, and a bad one gets an error reply with nothing touched."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from corral import __version__
from corral.config.errors import ConfigError
from corral.config.model import NAME_RE, AppConfig
from corral.config.schema import app_from_dict
from corral.core import apps_check, paths_check
from corral.core.app import App
from corral.core.deploys import DeployManager, check_trigger
from corral.core.environment import build_environment
from corral.core.lifecycle import State
from corral.core.logtail import Source, read_tails
from corral.core.paths_check import BadRequest, parse_request, tenant_home
from corral.core.records import process_record
from corral.core.settings import KNOWN, check_key
from corral.core.state_store import DumpError, DumpRefused, DumpStore
from corral.core.supervisor import Supervisor
from corral.core.tenancy import TenancyError, TenantMode, parse_limit, peer_uid
from corral.paths import Home
from corral.protocol.commands import Command
from corral.protocol.wire import ErrorCode, ProtocolError
from corral.secrets.errors import SecretError
from corral.secrets.keys import ENV_KEY
from corral.secrets.store import NAME_RE as SECRET_NAME_RE
from corral.secrets.store import SecretInfo, SecretStore, check_value

log = logging.getLogger("corral.secrets")
log_limit = logging.getLogger("corral.limit")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

TAIL_MAX_LINES = 10_000
TAIL_BUDGET = 3 * 1024 * 1024
"""Bytes the lines of one `tail` answer may take: well inside MAX_MESSAGE_BYTES."""
SECRET_MASK = "(secret)"
"""What `env` shows in place of a secret's value."""
TAIL_SETTLE = 1.0
"""How long `tail` waits for output already captured to reach the files."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ARGUMENT, message)


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{key!r} must be a string")
    return value


def _targets(args: dict[str, Any]) -> list[str]:
    value = args.get("target", args.get("targets"))
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(t, str) and t for t in value):
        return value
    raise _bad("'target' must be an app id, a name, 'all' or /regex/")


def _env(args: dict[str, Any]) -> dict[str, str] | None:
    value = args.get("cli_env")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad("'cli_env' must be an object of strings")
    # The master key of the secrets store must never be kept in state.json nor reach a child.
    return {k: v for k, v in value.items() if k != ENV_KEY}


def _configs(args: dict[str, Any]) -> list[AppConfig]:
    raw = args.get("apps")
    if not isinstance(raw, list) or not raw:
        raise _bad("'apps' must be a non-empty list")
    try:
        configs = [app_from_dict(item) for item in raw]
    except ConfigError as exc:
        raise _bad(str(exc)) from None
    names = [cfg.name for cfg in configs]
    if len(set(names)) != len(names):
        raise _bad("two apps in one request have the same name")
    return configs


def _secret_target(args: dict[str, Any]) -> tuple[str, str]:
    """(app, name) of a secret command. Neither is echoed: a confused client may have put
    the value there."""
    app, name = args.get("app"), args.get("name")
    if not isinstance(app, str) or not NAME_RE.match(app):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "'app' must be an app name (letters, digits and . _ : -)"
        )
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "'name' must be a variable name: letters, digits and _, not starting with a"
            " digit, at most 128 characters",
        )
    return app, name


def _secret_value(name: str, args: dict[str, Any]) -> str:
    value = args.get("value")
    try:
        check_value(name, value)  # its messages name the variable, never the value
    except SecretError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    assert isinstance(value, str)
    return value


def _secret_info(info: SecretInfo) -> dict[str, Any]:
    return {"app": info.app, "name": info.name, "set_at": info.set_at}


def _signal(value: Any) -> int:
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(signal.Signals(value))
        if isinstance(value, str):
            name = value.upper()
            if name.isdigit():
                return int(signal.Signals(int(name)))
            return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except (KeyError, ValueError):
        pass
    raise _bad(f"unknown signal {value!r}")


class Handlers:
    def __init__(
        self,
        supervisor: Supervisor,
        home: Home,
        request_shutdown: Callable[[], None],
        tenant: TenantMode | None = None,
    ):
        self.sup = supervisor
        self.home = home
        self.tenant = tenant or TenantMode()
        self.app_limit = self.tenant.app_limit
        """-1 unlimited; changed by `set_app_limit` (kept in memory: the helper gives the
        current limit to every daemon it starts)."""
        self._request_shutdown = request_shutdown
        self.on_metrics_settings: Callable[[], Awaitable[None]] | None = None
        # Secret commands and pre-start checks take turns: each runs store code in a thread.
        self._secrets_lock = asyncio.Lock()
        self.table: dict[str, Handler] = {
            Command.PING: self.ping,
            Command.START: self.start,
            Command.STOP: self.stop,
            Command.RESTART: self.restart,
            Command.RELOAD: self.reload,
            Command.CONFIGURE: self.configure,
            Command.DELETE: self.delete,
            Command.SCALE: self.scale,
            Command.RESET: self.reset,
            Command.LIST: self.list_processes,
            Command.DESCRIBE: self.describe,
            Command.ENV: self.env,
            Command.SEND_SIGNAL: self.send_signal,
            Command.FLUSH: self.flush,
            Command.RELOAD_LOGS: self.reload_logs,
            Command.LOG_FILES: self.log_files,
            Command.TAIL: self.tail,
            Command.SAVE: self.save,
            Command.RESURRECT: self.resurrect,
            Command.HOST: self.host,
            Command.METRICS: self.metrics,
            Command.SET: self.set,
            Command.GET: self.get,
            Command.SECRET_SET: self.secret_set,
            Command.SECRET_LIST: self.secret_list,
            Command.SECRET_REMOVE: self.secret_remove,
            Command.SECRET_ROTATE: self.secret_rotate,
            Command.SET_APP_LIMIT: self.set_app_limit,
            Command.RESOLVE_PATHS: self.resolve_paths,
            Command.CHECK_APPS: self.check_apps,
            Command.KILL: self.kill,
            Command.DEPLOY: self.deploy,
            Command.ROLLBACK: self.rollback,
            Command.DEPLOY_HISTORY: self.deploy_history,
            Command.DEPLOY_OUTPUT: self.deploy_output,
            Command.RELEASES: self.releases,
            Command.DEPLOY_KEY: self.deploy_key,
        }
        self.deploys = DeployManager(supervisor, home.root)
        from corral.agent.service import AgentService  # the hub link (SPEC 5)

        self.agent = AgentService(self)
        self.table.update(self.agent.commands())

    # ------------------------------------------------------------ records

    def records(self, apps: list[App], *, measure: bool = True) -> list[dict[str, Any]]:
        """The process records of `apps`. `measure=False` (the replies of start and
        restart) reads no figures for processes not measured yet: one that exec'd a moment
        ago has no CPU or memory worth showing, and reading /proc for each of a hundred
        new processes would delay the reply while they all start up."""
        return [
            process_record(
                app,
                inst,
                self.sup.sample_of(app, inst) if measure else self.sup.known_sample(app, inst),
                self.sup.logs_dir,
                self.sup.log_dropped(app, inst.number),
                self.sup.metrics_of(app, inst),
            )
            for app in apps
            for inst in app.sorted_instances()
        ]

    # ------------------------------------------------------------ commands

    async def ping(self, args: dict[str, Any]) -> Any:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "home": str(self.home.root),
            "app_limit": self.app_limit,
            # The uid this daemon admits besides its own and root's (None: not started for
            # a panel); the helper replaces a daemon whose panel is not its own.
            "panel_uid": self.tenant.panel_uid,
        }

    async def list_processes(self, args: dict[str, Any]) -> Any:
        return self.records(self.sup.ordered())

    async def start(self, args: dict[str, Any]) -> Any:
        if "apps" not in args:
            apps = self.sup.resolve(_targets(args))
            if args.get("force") or not all(_fully_running(app) for app in apps):
                await self.check_secrets([(app.name, app.config.secrets) for app in apps])
            if args.get("update_env") or args.get("env_name") is not None:
                for app in apps:
                    self.sup.replace_config(
                        app,
                        app.config,
                        cli_env=_env(args) if args.get("update_env") else app.cli_env,
                        env_name=_opt_str(args, "env_name") or app.env_name,
                        update_env=True,
                    )
            if all(_fully_running(app) for app in apps):
                if not args.get("force"):
                    names = ", ".join(repr(app.name) for app in apps)
                    raise ProtocolError(
                        ErrorCode.ALREADY_RUNNING,
                        f"{names} already running; use restart, or start -f",
                    )
                await asyncio.gather(*(self.sup.restart(app, "start -f") for app in apps))
            else:
                await asyncio.gather(*(self.sup.start(app) for app in apps))
            return self.records(apps, measure=False)
        configs = _configs(args)
        cli_env = _env(args)
        env_name = _opt_str(args, "env_name")
        force = bool(args.get("force"))
        await _check_scripts(configs)
        # Check every app before touching any, so that a refused request changes nothing.
        for cfg in configs:
            existing = self.sup.by_name(cfg.name)
            if (
                existing is not None
                and not force
                and any(inst.is_running() for inst in existing.instances.values())
            ):
                raise ProtocolError(
                    ErrorCode.ALREADY_RUNNING,
                    f"app {cfg.name!r} (id {existing.id}) is already running; "
                    "use restart, or start -f to replace it",
                )
        await self.check_secrets([(cfg.name, cfg.secrets) for cfg in configs])
        # No await from here to the last add_app: two requests cannot both take one slot.
        self.check_room([cfg.name for cfg in configs])
        touched = []
        for cfg in configs:
            found = self.sup.by_name(cfg.name)
            if found is None:
                touched.append((self.sup.add_app(cfg, cli_env=cli_env, env_name=env_name), False))
            else:
                self.sup.replace_config(
                    found, cfg, cli_env=cli_env, env_name=env_name, update_env=True
                )
                touched.append((found, True))
        await asyncio.gather(
            *(
                self.sup.restart(app, "start -f") if replace else self.sup.start(app)
                for app, replace in touched
            )
        )
        return self.records([app for app, _ in touched], measure=False)

    async def stop(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        await asyncio.gather(*(self.sup.stop(app) for app in apps))
        return self.records(apps)

    async def restart(self, args: dict[str, Any]) -> Any:
        apps = await self._prepare_restart(args)
        await asyncio.gather(*(self.sup.restart(app) for app in apps))
        return self.records(apps, measure=False)

    async def reload(self, args: dict[str, Any]) -> Any:
        parallel = args.get("parallel")
        if parallel is not None and (
            not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1
        ):
            raise _bad("'parallel' must be a whole number >= 1")
        apps = await self._prepare_restart(args)
        # One app after the other: a failed app stops the reload there, with its reason.
        for app in apps:
            await self.sup.reload(app, parallel)
        return self.records(apps)

    async def _prepare_restart(self, args: dict[str, Any]) -> list[App]:
        """Apply a new config (`apps`) or environment (`update_env`) before a restart."""
        update_env = bool(args.get("update_env"))
        cli_env = _env(args)
        env_name = _opt_str(args, "env_name")
        if "apps" in args:
            configs = _configs(args)
            await _check_scripts(configs)
            await self.check_secrets([(cfg.name, cfg.secrets) for cfg in configs])
            self.check_room([cfg.name for cfg in configs])  # no await until the apps exist
            apps = []
            for cfg in configs:
                app = self.sup.by_name(cfg.name)
                if app is None:
                    app = self.sup.add_app(cfg, cli_env=cli_env, env_name=env_name)
                else:
                    self.sup.replace_config(
                        app, cfg, cli_env=cli_env, env_name=env_name, update_env=update_env
                    )
                apps.append(app)
        else:
            apps = self.sup.resolve(_targets(args))
            await self.check_secrets([(app.name, app.config.secrets) for app in apps])
            if update_env:
                for app in apps:
                    self.sup.replace_config(
                        app, app.config, cli_env=cli_env, env_name=env_name, update_env=True
                    )
        return apps

    async def configure(self, args: dict[str, Any]) -> Any:
        """Replace the stored config of existing apps without restarting anything: each
        instance launches with it next time (a restart, a reload, a crash)."""
        configs = _configs(args)
        await _check_scripts(configs)
        # Every name is checked before any config changes: a refused request changes nothing.
        pairs: list[tuple[App, AppConfig]] = []
        for cfg in configs:
            app = self.sup.by_name(cfg.name)
            if app is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TARGET,
                    f"no app named {cfg.name!r}: configure changes existing apps only",
                )
            pairs.append((app, cfg))
        for app, cfg in pairs:
            self.sup.replace_config(
                app, cfg, cli_env=app.cli_env, env_name=app.env_name, update_env=False
            )
        return self.records([app for app, _ in pairs])

    async def delete(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        await asyncio.gather(*(self.sup.delete(app) for app in apps))
        return {"deleted": [app.name for app in apps]}

    async def scale(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        count = args.get("count")
        if isinstance(count, int) and not isinstance(count, bool):
            count = str(count)
        if not isinstance(count, str) or not count.lstrip("+-").isdigit():
            raise _bad("'count' must be N, +N or -N")
        for app in apps:
            current = len(app.instances)
            wanted = current + int(count) if count[0] in "+-" else int(count)
            await self.sup.scale(app, wanted)
        return self.records(apps)

    async def reset(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        for app in apps:
            self.sup.reset(app)
        return self.records(apps)

    async def describe(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        return [
            {
                "id": app.id,
                "name": app.name,
                "config": app.config.to_dict(),
                "env_name": app.env_name,
                "desired": app.desired,
                "created_at": app.created_at,
                "instances": self.records([app]),
                "secrets": self._described_secrets(app),
                "events": [
                    {k: e[k] for k in ("at", "instance", "from", "to", "reason")}
                    for e in self.sup.events.recent(app.name)
                ],
            }
            for app in apps
        ]

    async def env(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args))
        result = []
        for app in apps:
            # Which variables are secrets, never what they hold: nothing is decrypted here.
            masked = {info.name: SECRET_MASK for info in self.sup.secret_names(app.name)}
            for inst in app.sorted_instances():
                try:
                    env = build_environment(
                        app.config,
                        instance=inst.number,
                        cli_env=app.cli_env,
                        env_name=app.env_name,
                        secrets=masked,
                    )
                except ValueError as exc:
                    raise _bad(f"{app.name}: {exc}") from None
                result.append({"name": app.name, "instance": inst.number, "env": env})
        return result

    async def send_signal(self, args: dict[str, Any]) -> Any:
        signum = _signal(args.get("signal"))
        apps = self.sup.resolve(_targets(args))
        sent = [inst for app in apps for inst in app.instances.values() if inst.send_signal(signum)]
        if not sent:
            raise ProtocolError(ErrorCode.CONFLICT, "no running process to signal")
        return self.records(apps)

    async def log_files(self, args: dict[str, Any]) -> Any:
        apps = self.sup.resolve(_targets(args)) if args.get("target") else self.sup.ordered()
        result = []
        for app in apps:
            for inst in app.sorted_instances():
                out, err = app.log_paths(self.sup.logs_dir, inst.number)
                result.append(
                    {"name": app.name, "instance": inst.number, "out": str(out), "err": str(err)}
                )
        return result

    async def tail(self, args: dict[str, Any]) -> Any:
        count = args.get("lines", 100)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= TAIL_MAX_LINES
        ):
            raise _bad(f"'lines' must be a whole number from 1 to {TAIL_MAX_LINES}")
        stream = args.get("stream", "both")
        if stream not in ("out", "err", "both"):
            raise _bad("'stream' must be 'out', 'err' or 'both'")
        streams = ("out", "err") if stream == "both" else (stream,)
        sources: list[Source] = []
        seen: set[Path] = set()  # merged logs: several instances, one file
        for app in self.sup.resolve(_targets(args)):
            for inst in app.sorted_instances():
                out, err = app.log_paths(self.sup.logs_dir, inst.number)
                paths = {"out": out, "err": err}
                for name in streams:
                    if paths[name] not in seen:
                        seen.add(paths[name])
                        sources.append(Source(app.name, inst.number, name, paths[name]))
        # Lines the daemon has read from the pipes but not written yet belong in the answer;
        # a slow disk only delays it by TAIL_SETTLE.
        with contextlib.suppress(TimeoutError, OSError):
            drained = asyncio.wrap_future(self.sup.log_writer.drained())
            await asyncio.wait_for(asyncio.shield(drained), TAIL_SETTLE)
        try:
            return await asyncio.to_thread(read_tails, sources, count, TAIL_BUDGET)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise ProtocolError(
                ErrorCode.CONFLICT, f"cannot read the log file{where}: {exc.strerror or exc}"
            ) from None

    async def flush(self, args: dict[str, Any]) -> Any:
        files = await self.log_files(args)
        paths = sorted({f[k] for f in files for k in ("out", "err")})
        writer = self.sup.log_writer
        await asyncio.gather(*(asyncio.wrap_future(writer.truncate(Path(p))) for p in paths))
        return {"flushed": paths}

    async def reload_logs(self, args: dict[str, Any]) -> Any:
        await asyncio.wrap_future(self.sup.log_writer.reopen_all())
        return {"reopened": True}

    async def save(self, args: dict[str, Any]) -> Any:
        apps = [app.to_state() for app in self.sup.ordered()]
        store = DumpStore(self.home.dump)
        try:
            await asyncio.to_thread(store.write, apps, force=bool(args.get("force")))
        except DumpRefused as exc:
            raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None
        return {"path": str(self.home.dump), "apps": len(apps)}

    async def resurrect(self, args: dict[str, Any]) -> Any:
        store = DumpStore(self.home.dump)
        try:
            dump = await asyncio.to_thread(store.read)
        except DumpError as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, str(exc)) from None
        # Every record is read, and the app limit checked, before any app is added: a dump
        # with a bad record, or with more apps than there is room for, changes nothing.
        wanted: list[tuple[AppConfig, dict[str, Any]]] = []
        for record in dump.apps:
            try:
                cfg = app_from_dict(record.get("config", {}))
            except ConfigError as exc:
                raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"dump: {exc}") from None
            if self.sup.by_name(cfg.name) is not None:
                continue  # already here: resurrect never runs an app twice
            if any(cfg.name == seen.name for seen, _ in wanted):
                continue  # a dump written by hand may name an app twice: the first wins
            wanted.append((cfg, record))
        self.check_room([cfg.name for cfg, _ in wanted])
        restored: list[tuple[App, bool]] = []
        for cfg, record in wanted:
            cli_env = record.get("cli_env")
            env_name = record.get("env_name")
            app = self.sup.add_app(
                cfg,
                cli_env=cli_env if isinstance(cli_env, dict) else None,
                env_name=env_name if isinstance(env_name, str) else None,
            )
            restored.append((app, record.get("desired", "running") == "running"))
        for app, running in restored:
            if running:
                await self.sup.start(app)
        return {"restored": self.records([app for app, _ in restored]), "warning": dump.warning}

    async def host(self, args: dict[str, Any]) -> Any:
        host = await self.sup.current_host()
        return {**dataclasses.asdict(host), "app_limit": self.app_limit}

    # ------------------------------------------------------------ tenant paths (SPEC 2.2)

    async def resolve_paths(self, args: dict[str, Any]) -> Any:
        """Resolve a tenant's paths with this daemon's rights, confined to its home."""
        home = tenant_home(self.home.root)
        try:
            entries = parse_request(args, home)
        except BadRequest as exc:
            raise _bad(str(exc)) from None
        return await asyncio.to_thread(paths_check.resolve_paths, home, entries)

    async def check_apps(self, args: dict[str, Any]) -> Any:
        """Validate a tenant's app settings with this daemon's rights (see apps_check)."""
        home = tenant_home(self.home.root)
        try:
            apps, source = apps_check.parse_request(args)
            return await asyncio.to_thread(apps_check.check_apps, home, apps, source)
        except (BadRequest, ConfigError) as exc:
            raise _bad(str(exc)) from None

    # ------------------------------------------------------------ app limit (SPEC 2.2)

    def check_room(self, names: Sequence[str]) -> None:
        """Refuse a request that would make this daemon hold more apps than its limit.

        Counts apps (names), not instances; names already here are not new. Call it with
        no await between it and the add_app calls it allows.
        """
        limit = self.app_limit
        if limit < 0:
            return
        new = {name for name in names if self.sup.by_name(name) is None}
        held = len(self.sup.apps)
        if held + len(new) <= limit:
            return
        if limit == 0:
            message = "the app limit is 0: no app may be created here"
        elif held >= limit:
            message = f"the app limit is reached: {held} of {limit} apps; delete one first"
        else:
            message = (
                f"the app limit would be exceeded: {held} of {limit} apps, and this request"
                f" adds {len(new)}; nothing was started"
            )
        raise ProtocolError(ErrorCode.LIMIT_REACHED, message)

    async def set_app_limit(self, args: dict[str, Any]) -> Any:
        """Only root or the panel's user; lowering the limit stops nothing."""
        uid = peer_uid.get()
        if not self.tenant.may_set_limit(uid):
            raise ProtocolError(
                ErrorCode.PERMISSION_DENIED, "only the panel may change the app limit"
            )
        try:
            limit = parse_limit(args.get("limit"), "'limit'")
        except TenancyError as exc:
            raise _bad(str(exc)) from None
        if limit != self.app_limit:
            log_limit.info("app limit %d -> %d (set by uid %s)", self.app_limit, limit, uid)
        self.app_limit = limit
        return {"limit": limit}

    async def metrics_snapshot(self) -> dict[str, Any]:
        """What the Prometheus endpoint (and `corral metrics`) shows."""
        return {
            "host": dataclasses.asdict(await self.sup.current_host()),
            "daemon": {"pid": os.getpid(), "rss": self.sup.daemon_rss},
            "processes": self.records(self.sup.ordered()),
        }

    async def metrics(self, args: dict[str, Any]) -> Any:
        # Imported on use: prometheus_client pulls in http.server, which the daemon does
        # not otherwise need.
        from corral.core.prometheus import render

        return {"text": render(await self.metrics_snapshot()).decode()}

    async def set(self, args: dict[str, Any]) -> Any:
        key = args.get("key")
        if not isinstance(key, str):
            raise _bad("'key' must be a string")
        settings = self.sup.settings
        try:
            value = settings.parse(key, args.get("value"))
        except ValueError as exc:
            raise _bad(f"{key}: {exc}" if key in KNOWN else str(exc)) from None
        previous = settings.values[key]
        settings.values[key] = value
        try:
            await asyncio.to_thread(settings.save)
        except OSError as exc:
            settings.values[key] = previous
            raise ProtocolError(ErrorCode.INTERNAL, f"cannot save settings: {exc}") from None
        if key.startswith("logs."):
            self.sup.apply_log_settings()
        if key.startswith("metrics.") and self.on_metrics_settings is not None:
            await self.on_metrics_settings()
        return {"key": key, "value": value}

    async def get(self, args: dict[str, Any]) -> Any:
        key = args.get("key")
        values = self.sup.settings.values
        if key is None:
            return dict(sorted(values.items()))
        try:
            return {key: values[check_key(str(key))]}
        except ValueError as exc:
            raise _bad(str(exc)) from None

    # ------------------------------------------------------------ secrets (SPEC 3)

    def _described_secrets(self, app: App) -> list[dict[str, Any]]:
        """Names and times of the app's secrets; a name its config needs but that is not
        set has a null `set_at`."""
        infos = {info.name: info.set_at for info in self.sup.secret_names(app.name)}
        needed = {name: None for name in app.config.secrets if name not in infos}
        merged: dict[str, float | None] = {**infos, **needed}
        return [{"name": name, "set_at": merged[name]} for name in sorted(merged)]

    def _store(self) -> SecretStore:
        if self.sup.secrets is None:
            raise ProtocolError(ErrorCode.INTERNAL, "this daemon has no secrets store")
        return self.sup.secrets

    def _secrets_unsettled(self) -> bool:
        """The last load failed, or the key could not be read: either may be fixed now."""
        store = self.sup.secrets
        return store is not None and (
            self.sup.secrets_problem is not None or store.key_problem is not None
        )

    async def _reload_secrets(self) -> None:
        """Load the store again if `_secrets_unsettled`."""
        store = self.sup.secrets
        if store is None or not self._secrets_unsettled():
            return
        try:
            await asyncio.to_thread(store.load)
        except (SecretError, OSError) as exc:
            self.sup.secrets_problem = str(exc)
            return
        self.sup.secrets_problem = None
        log.info("secrets: the secrets file can be read again")

    async def check_secrets(self, apps: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Refuse, before anything changes, to (re)start an app whose secrets would make its
        launch fail: a needed one is not set, or one does not decrypt. The decrypted values
        are dropped at once; the launch decrypts again for the exec. Memory only (the
        store holds its keys once loaded): no thread hop for each of 1000 starts."""
        if self._secrets_unsettled():
            async with self._secrets_lock:
                await self._reload_secrets()
        for name, required in apps:
            try:
                self.sup.secret_environment(name, required)
            except SecretError as exc:
                raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None

    async def _secret_call(self, call: Callable[[], Any]) -> Any:
        """Run a blocking store operation in a thread; store problems are `conflict`s."""
        store = self._store()
        async with self._secrets_lock:
            await self._reload_secrets()
            if self.sup.secrets_problem is not None:
                raise ProtocolError(ErrorCode.CONFLICT, self.sup.secrets_problem)
            try:
                return await asyncio.to_thread(call)
            except SecretError as exc:
                raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None
            except Exception as exc:
                # Not str(exc): an unexpected error must not carry a value to the client.
                log.error("secrets: %s in %s", type(exc).__name__, store.path)
                raise ProtocolError(
                    ErrorCode.INTERNAL, f"secrets: unexpected {type(exc).__name__}"
                ) from None

    async def secret_set(self, args: dict[str, Any]) -> Any:
        app, name = _secret_target(args)
        value = _secret_value(name, args)
        store = self._store()
        info: SecretInfo = await self._secret_call(lambda: store.set(app, name, value))
        self.sup.forget_cli_value(app, name)
        log.info("secret %s of %s set", name, app)
        return _secret_info(info)

    async def secret_list(self, args: dict[str, Any]) -> Any:
        app = args.get("app")
        if app is not None and (not isinstance(app, str) or not NAME_RE.match(app)):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'app' must be an app name or null")
        store = self._store()
        infos: list[SecretInfo] = await self._secret_call(lambda: store.names(app))
        return [_secret_info(info) for info in infos]

    async def secret_remove(self, args: dict[str, Any]) -> Any:
        app, name = _secret_target(args)
        store = self._store()
        removed: bool = await self._secret_call(lambda: store.remove(app, name))
        if removed:
            log.info("secret %s of %s removed", name, app)
        return {"removed": removed}

    async def secret_rotate(self, args: dict[str, Any]) -> Any:
        store = self._store()
        count, kid = await self._secret_call(store.rotate)
        log.info("secrets: %d re-encrypted under the new key %s", count, kid)
        return {"rotated": count, "key_id": kid}

    # ------------------------------------------------------------ deploys (SPEC 4)

    def _trigger(self, args: dict[str, Any]) -> str:
        return check_trigger(args.get("trigger"), f"cli (uid {peer_uid.get()})")

    async def deploy(self, args: dict[str, Any]) -> Any:
        name = _deploy_app(args)
        ref = _opt_str(args, "ref")
        if ref is not None:
            from corral.deploy.source import SourceError, check_ref

            try:
                ref = check_ref(ref)
            except SourceError as exc:
                raise _bad(f"'ref': {exc.message}") from None
        return {"deploy": await self.deploys.deploy(name, ref, self._trigger(args))}

    async def rollback(self, args: dict[str, Any]) -> Any:
        from corral.deploy.layout import is_release_id

        name = _deploy_app(args)
        release = _opt_str(args, "release")
        if release is not None and not is_release_id(release):
            raise _bad(
                "'release' must be a release id like 20261124T031500Z-1a2b3c4d5e6f, "
                f"got {release[:80]!r}"
            )
        return {"deploy": await self.deploys.rollback(name, release, self._trigger(args))}

    async def deploy_history(self, args: dict[str, Any]) -> Any:
        limit = args.get("limit", 50)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 200:
            raise _bad("'limit' must be a whole number from 1 to 200")
        return await self.deploys.history(_deploy_app(args), limit)

    async def deploy_output(self, args: dict[str, Any]) -> Any:
        deploy_id = args.get("id")
        if not isinstance(deploy_id, str):
            raise _bad("'id' must be a deploy id")
        return await self.deploys.output(_deploy_app(args), deploy_id)

    async def releases(self, args: dict[str, Any]) -> Any:
        return await self.deploys.releases(_deploy_app(args))

    async def deploy_key(self, args: dict[str, Any]) -> Any:
        create = args.get("create", False)
        if not isinstance(create, bool):
            raise _bad("'create' must be true or false")
        return await self.deploys.key(_deploy_app(args), create)

    async def kill(self, args: dict[str, Any]) -> Any:
        running = sum(
            1
            for app in self.sup.apps.values()
            for inst in app.instances.values()
            if inst.state is not State.STOPPED
        )
        self._request_shutdown()
        return {"stopped": running}


def _deploy_app(args: dict[str, Any]) -> str:
    """The `app` of a deploy command: one app's name (no ids, `all` or regexes)."""
    name = args.get("app")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad("'app' must be an app name (letters, digits and . _ : -)")
    return name


def _fully_running(app: App) -> bool:
    return bool(app.instances) and all(inst.is_running() for inst in app.instances.values())


async def _check_scripts(configs: list[AppConfig]) -> None:
    """A script that vanished between the CLI's check and now is refused, not errored."""

    def missing() -> list[str]:
        return [
            f"app {cfg.name!r}: script {cfg.script} does not exist"
            for cfg in configs
            if os.path.isabs(cfg.script) and not os.path.exists(cfg.script)
        ]

    problems = await asyncio.to_thread(missing)
    if problems:
        raise ProtocolError(ErrorCode.NOT_FOUND, problems[0])
