"""What the process table, the app pages and their JSON API do with a tenant's apps.

Pages and API call the same functions, so both check, act and audit alike. Every call goes
through the tenant's daemon (`Panel.daemon`); every state-changing one writes an audit
entry, `ok` or `failed` (with the daemon's message) or `denied` (the app limit).
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from corral.config.errors import ConfigError
from corral.config.model import AppConfig
from corral.config.schema import app_from_dict, app_from_mapping
from corral.panel.confine import confine
from corral.panel.gateway import (
    DaemonDown,
    GatewayError,
    LimitRefused,
    NotFound,
    Refused,
    TenantDaemon,
)
from corral.panel.validation import (
    MAX_INSTANCES,
    TEXT_FORMATS,
    AppRefused,
    Build,
    Check,
    Confiner,
    FieldErrors,
    config_text_to_apps,
    resolving_with,
    validate_app_form,
)
from corral.panel.webhooks import service as webhooks
from corral.protocol.wire import ErrorCode

if TYPE_CHECKING:
    from corral.panel.routing import Ctx
    from corral.panel.services import Panel, TenantRef

Verb = Literal["start", "stop", "restart", "reload"]
VERBS: tuple[Verb, ...] = ("start", "stop", "restart", "reload")
ConfigFormat = Literal["yaml", "json", "toml"]
FORMATS: tuple[ConfigFormat, ...] = ("yaml", "json", "toml")
IMPORT_FORMATS = TEXT_FORMATS
"""What an uploaded config may be: a corral.yaml, JSON, TOML, or a Procfile."""
ApplyMode = Literal["restart", "reload"]
Checked = TypeVar("Checked")
RESERVED_NAMES = frozenset({"new", "import"})
"""App names the panel's URLs would misread (/t/{tenant}/apps/new is the creation form,
/t/{tenant}/apps/import the upload)."""
_COUNT_RE = re.compile(r"[+-]?[0-9]{1,4}")
_TRANSITIONAL = ("stopping", "launching", "waiting-restart")
T = TypeVar("T")


class ActionFailed(Exception):
    """An action that did not happen: `status` for the API, `message` for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitReached(ActionFailed):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


def failure_of(exc: GatewayError) -> ActionFailed:
    """The HTTP answer for a daemon error: 404 unknown app, 503 daemon down, 409/422 for
    a refusal (LimitReached when the daemon's own app limit refused), 502 for anything
    else the daemon said."""
    if isinstance(exc, LimitRefused):
        return LimitReached(exc.message)
    if isinstance(exc, NotFound):
        return ActionFailed(404, exc.message)
    if isinstance(exc, DaemonDown):
        return ActionFailed(503, exc.message)
    if isinstance(exc, Refused):
        return ActionFailed(422 if exc.code is ErrorCode.INVALID_ARGUMENT else 409, exc.message)
    return ActionFailed(502, exc.message)


# --- the process list, grouped by app ----------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cpu_text(cpu: float | None) -> str:
    return "-" if cpu is None else f"{cpu:.1f} %"


@dataclass(frozen=True)
class Member:
    """One instance of an app, from its process record."""

    instance: int
    pid: int | None
    status: str
    cpu: float | None
    memory: int | None
    uptime: float | None
    restarts: int
    started_at: float | None
    error: str | None
    last_exit: str | None

    @property
    def cpu_text(self) -> str:
        return _cpu_text(self.cpu)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Member:
        code, sig = record.get("exit_code"), record.get("exit_signal")
        last_exit = (
            f"killed by {sig}" if sig else (f"exit code {code}" if code is not None else None)
        )
        memory = _number(record.get("memory"))
        return cls(
            instance=int(record.get("instance") or 0),
            pid=record.get("pid") if isinstance(record.get("pid"), int) else None,
            status=str(record.get("status") or "stopped"),
            cpu=_number(record.get("cpu")),
            memory=None if memory is None else int(memory),
            uptime=_number(record.get("uptime")),
            restarts=int(record.get("restarts") or 0),
            started_at=_number(record.get("started_at")),
            error=record.get("error") if isinstance(record.get("error"), str) else None,
            last_exit=last_exit,
        )


@dataclass(frozen=True)
class AppSummary:
    """One row of the process table: an app and its instances."""

    name: str
    id: int
    status: str
    """online, stopped, errored, launching, stopping, waiting-restart, or partial (some
    instances online, others stopped)."""
    label: str
    """The status as shown: "online", "2 of 3 online"."""
    instances: int
    exec_mode: str
    cpu: float | None
    memory: int | None
    uptime: float | None
    """Of the youngest running instance: a restart of any of them shows."""
    restarts: int
    members: tuple[Member, ...]

    @property
    def cpu_text(self) -> str:
        return _cpu_text(self.cpu)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["members"] = [asdict(m) for m in self.members]
        return data


def overall_status(statuses: Sequence[str]) -> tuple[str, str]:
    """(status, label) of an app from its instances' statuses."""
    if not statuses:
        return "stopped", "stopped"
    total = len(statuses)

    def some(state: str) -> str:
        count = statuses.count(state)
        return state if count == total else f"{count} of {total} {state}"

    if len(set(statuses)) == 1:
        return statuses[0], statuses[0]
    if "errored" in statuses:
        return "errored", some("errored")
    for state in _TRANSITIONAL:
        if state in statuses:
            return state, some(state)
    return "partial", some("online")


def summarize(records: Iterable[Mapping[str, Any]]) -> list[AppSummary]:
    """The daemon's process records (one per instance), grouped by app, in app id order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        name = record.get("name")
        if isinstance(name, str):
            grouped.setdefault(name, []).append(record)
    apps = []
    for name, group in grouped.items():
        members = tuple(sorted((Member.of(r) for r in group), key=lambda m: m.instance))
        status, label = overall_status([m.status for m in members])
        cpus = [m.cpu for m in members if m.cpu is not None and m.pid is not None]
        memories = [m.memory for m in members if m.memory is not None and m.pid is not None]
        uptimes = [m.uptime for m in members if m.uptime is not None and m.pid is not None]
        first = group[0]
        apps.append(
            AppSummary(
                name=name,
                id=int(first.get("id") or 0),
                status=status,
                label=label,
                instances=len(members),
                exec_mode=str(first.get("exec_mode") or "fork"),
                cpu=round(sum(cpus), 1) if cpus else None,
                memory=sum(memories) if memories else None,
                uptime=min(uptimes) if uptimes else None,
                restarts=sum(m.restarts for m in members),
                members=members,
            )
        )
    return sorted(apps, key=lambda a: (a.id, a.name))


BLANK = AppSummary("", 0, "stopped", "stopped", 1, "fork", None, None, None, 0, ())
"""The empty row the process table's JavaScript clones for an app that appears."""


def list_apps(panel: Panel, tenant: TenantRef) -> list[AppSummary]:
    return summarize(panel.daemon(tenant).processes())


def snapshot(panel: Panel, tenant: TenantRef) -> dict[str, Any]:
    """What the process table shows, as JSON (the WebSocket's and the list API's body)."""
    apps = list_apps(panel, tenant)
    return {
        "tenant": tenant.name,
        "apps": [app.to_json() for app in apps],
        "count": len(apps),
        "limit": tenant.app_limit,
    }


def summary_of(records: Iterable[Mapping[str, Any]], name: str) -> AppSummary | None:
    return next((app for app in summarize(records) if app.name == name), None)


@dataclass(frozen=True)
class Done:
    """What an action left: the app's row and its process records."""

    app: AppSummary
    records: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app.to_json(), "processes": self.records}


def _done(records: Iterable[Mapping[str, Any]], name: str, after: str) -> Done:
    mine = [dict(r) for r in records if r.get("name") == name]
    app = summary_of(mine, name)
    if app is None:
        raise ActionFailed(502, f"the daemon did not report {name!r} after {after}")
    return Done(app, mine)


def find_app(ctx: Ctx, name: str) -> AppSummary:
    """The app's row; NotFound (404) when the tenant has no such app."""
    app = summary_of(_daemon(ctx).processes(), name)
    if app is None:
        raise NotFound(f"no app named {name!r}")
    return app


def _daemon(ctx: Ctx) -> TenantDaemon:
    # An action (POST) may start the tenant's stopped daemon; a page view may not.
    return ctx.panel.daemon(_tenant(ctx), start=ctx.spec.changes_state)


def _tenant(ctx: Ctx) -> TenantRef:
    if ctx.tenant is None:  # every route here has {tenant}; the wrapper resolved it
        raise RuntimeError("an app route without a tenant")
    return ctx.tenant


def confined(ctx: Ctx, action: str, run: Callable[[Confiner, Build], Checked]) -> Checked:
    """`run` with each of the tenant's paths checked, and each app validated, where the
    tenant's rights apply: by the tenant's daemon (`resolve_paths` and `check_apps`,
    batched) in isolated mode, where the panel's uid cannot see a tenant's private
    folders and must not judge with its own rights; in this process in development mode
    (one uid for all). A daemon failure is audited under `action` and raised as
    ActionFailed."""
    if not ctx.panel.config.isolated:
        return run(confine, app_from_mapping)
    daemon = _daemon(ctx)
    try:
        return resolving_with(daemon.resolve_paths, _checker(daemon), run)
    except GatewayError as exc:
        ctx.audit(action, "failed", detail=f"checking paths: {exc.message}")
        raise failure_of(exc) from None


def _checker(daemon: TenantDaemon) -> Check:
    """The daemon's `check_apps`: a refused app is AppRefused (a mistake of the user's), a
    malformed answer a GatewayError."""

    def check(apps: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        try:
            checked = daemon.check_apps(apps, source)
        except Refused as exc:
            if exc.code is ErrorCode.INVALID_ARGUMENT:
                raise AppRefused(exc.message) from None
            raise
        except GatewayError as exc:
            if exc.code is ErrorCode.UNKNOWN_COMMAND:  # started by an older corral
                raise GatewayError(
                    "the tenant's daemon is older than the panel (it cannot check apps); "
                    "restart it to use this corral"
                ) from None
            raise
        for raw, config in zip(apps, checked, strict=True):
            try:
                app = app_from_dict(config)
            except ConfigError as exc:
                raise GatewayError(f"the daemon's check_apps answer is malformed: {exc}") from None
            name = raw.get("name")
            if isinstance(name, str) and app.name != name:
                raise GatewayError(
                    f"the daemon's check_apps answered for {app.name!r}, not {name!r}"
                )
        return checked

    return check


# --- actions ------------------------------------------------------------------------------


def _audited_call(
    ctx: Ctx, action: str, app: str, detail: str, call: Callable[[], T], *, step: bool = False
) -> T:
    """Run `call()`, audit the outcome; a daemon error becomes ActionFailed (LimitReached,
    audited as denied, when the daemon's app limit refused). A `step` (a look-up before
    the action) is audited only when it fails."""
    try:
        result = call()
    except GatewayError as exc:
        message = exc.message
        if isinstance(exc, NotFound) and exc.code is ErrorCode.UNKNOWN_TARGET:
            message = f"no app named {app!r}"
        outcome = "denied" if isinstance(exc, LimitRefused) else "failed"
        ctx.audit(action, outcome, app=app, detail=f"{detail}: {message}" if detail else message)
        if isinstance(exc, LimitRefused):
            raise LimitReached(message) from None
        failure = failure_of(exc)
        raise ActionFailed(failure.status, message) from None
    if not step:
        ctx.audit(action, app=app, detail=detail)
    return result


def act(ctx: Ctx, name: str, verb: Verb) -> Done:
    """start, stop, restart or reload one app; its row afterwards."""
    if verb not in VERBS:
        raise ActionFailed(404, f"unknown action {verb!r}")
    daemon = _daemon(ctx)
    target = f"/^{re.escape(name)}$/"  # exactly this app, never an id or a pattern
    records = _audited_call(ctx, f"app.{verb}", name, "", lambda: daemon.act(verb, target))
    return _done(records, name, verb)


def parse_count(value: object) -> str:
    """The scale field: "+1", "-1" or a whole number of instances, as the daemon takes it."""
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not _COUNT_RE.fullmatch(text):
        raise FieldErrors({"count": "expected a number of instances, or +1 / -1"})
    if text[0] not in "+-" and not 1 <= int(text) <= MAX_INSTANCES:
        raise FieldErrors({"count": f"expected 1 to {MAX_INSTANCES} instances"})
    return text


def scale(ctx: Ctx, name: str, count: object) -> Done:
    """Set the number of instances (never counts as a new app)."""
    try:
        wanted = parse_count(count)
    except FieldErrors as exc:
        ctx.audit("app.scale", "failed", app=name, detail=f"count {count!r}: {exc.errors['count']}")
        raise
    daemon = _daemon(ctx)
    if wanted[0] in "+-":
        current = _audited_call(
            ctx, "app.scale", name, f"count {wanted}", lambda: find_app(ctx, name), step=True
        ).instances
        if not 1 <= current + int(wanted) <= MAX_INSTANCES:
            message = (
                "an app needs at least 1 instance"
                if current + int(wanted) < 1
                else f"at most {MAX_INSTANCES} instances"
            )
            ctx.audit("app.scale", "failed", app=name, detail=f"{current} {wanted}: {message}")
            raise ActionFailed(422, message)
    records = _audited_call(
        ctx, "app.scale", name, f"count {wanted}", lambda: daemon.scale(name, wanted)
    )
    return _done(records, name, "scaling")


def delete(ctx: Ctx, name: str) -> list[str]:
    daemon = _daemon(ctx)
    deleted: list[str] = _audited_call(ctx, "app.delete", name, "", lambda: daemon.delete(name))
    # Its webhook goes with it: a later app of the same name must not inherit URL and token.
    for gone in deleted:
        with contextlib.suppress(webhooks.HookError):
            webhooks.disable(ctx.panel, _tenant(ctx), gone)
    return deleted


# --- creating apps ------------------------------------------------------------------------

_create_locks: dict[int, threading.Lock] = {}
_create_locks_guard = threading.Lock()


def _create_lock(tenant_id: int) -> threading.Lock:
    """Count-then-start is one step per tenant: two creations at once cannot both pass
    a limit that has room for one."""
    with _create_locks_guard:
        return _create_locks.setdefault(tenant_id, threading.Lock())


def limit_problem(tenant: TenantRef, count: int, adding: int = 1) -> str | None:
    """Why `adding` more apps (to the `count` the tenant has) are not allowed, or None."""
    limit = tenant.app_limit
    if limit < 0 or count + adding <= limit:
        return None
    if limit == 0:
        return "this tenant may not run any app (its app limit is 0)"
    if adding == 1 or count >= limit:
        return f"the app limit is reached: {count} of {limit} apps; delete one first"
    room = limit - count
    return (
        f"the app limit is {limit} and this tenant has {count} apps: there is room for "
        f"{room} more, not {adding}; nothing was started"
    )


def _multiline(text: str) -> bool:
    return "\n" in text or "\r" in text


def _form_text(data: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """JSON fields as the form's text (env objects become KEY=VALUE lines, lists become
    words or lines, booleans on/off), and the fields that cannot be said that way."""
    form: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key, value in data.items():
        if key == "env" and isinstance(value, Mapping):
            bad = [k for k, v in value.items() if not isinstance(v, str | int | float)]
            broken = [
                k for k, v in value.items() if isinstance(v, str) and ("\n" in v or "\r" in v)
            ]
            if bad or broken:
                errors[key] = f"{(bad or broken)[0]}: " + (
                    "expected a text value" if bad else "a value cannot contain a line break"
                )
                continue
            form[key] = "\n".join(f"{k}={v}" for k, v in value.items())
        elif key in ("args", "interpreter_args") and isinstance(value, list):
            form[key] = shlex.join(str(v) for v in value)
        elif key in ("listen", "watch", "ignore_watch") and isinstance(value, list):
            form[key] = "\n".join(str(v) for v in value)
        elif isinstance(value, bool):
            form[key] = "on" if value else "off"
        elif isinstance(value, int | float | str):
            form[key] = str(value)
        elif value is not None:
            errors[key] = f"expected text, not {type(value).__name__}"
    return form, errors


def create(ctx: Ctx, data: Mapping[str, Any]) -> Done:
    """Validate and start a new app. Raises FieldErrors (nothing started), LimitReached
    (audited as denied) or ActionFailed (the daemon refused; audited as failed)."""
    tenant = _tenant(ctx)
    form, errors = _form_text(data)
    name = form.get("name", "").strip()[:80] or None
    try:
        config = confined(
            ctx, "app.create", lambda c, b: validate_app_form(form, tenant.home, c, b)
        )
    except FieldErrors as exc:
        errors = exc.errors | errors
    if errors:
        ctx.audit("app.create", "failed", app=name, detail=f"invalid: {', '.join(errors)}")
        raise FieldErrors(errors)
    name = str(config["name"])
    if name in RESERVED_NAMES:
        reserved = f"{name!r} is reserved: /t/<tenant>/apps/{name} is a page of the panel"
        ctx.audit("app.create", "failed", app=name, detail=reserved)
        raise FieldErrors({"name": reserved})
    records = _start_new(ctx, [config], ["name"])
    return _done(records, name, "starting it")


def import_apps(ctx: Ctx, text: str, fmt: str) -> list[Done]:
    """Validate a config text (corral.yaml, JSON, TOML or a Procfile) and start every app
    in it, all or none: each is confined as the form's are, names that exist are refused,
    and the app limit counts all the new apps at once. Raises FieldErrors (keyed
    `config`, `format` or `apps[i].key`; nothing started), LimitReached (audited as
    denied) or ActionFailed. Every app is audited as app.create."""
    tenant = _tenant(ctx)
    try:
        if fmt not in IMPORT_FORMATS:
            expected = ", ".join(IMPORT_FORMATS)
            raise FieldErrors({"format": f"expected one of {expected}, got {fmt!r}"})
        configs = confined(
            ctx, "app.create", lambda c, b: config_text_to_apps(text, fmt, tenant.home, c, b)
        )
        reserved = {
            f"apps[{i}].name": f"{c['name']!r} is reserved: /t/<tenant>/apps/{c['name']} is "
            "a page of the panel"
            for i, c in enumerate(configs)
            if c["name"] in RESERVED_NAMES
        }
        if reserved:
            raise FieldErrors(reserved)
    except FieldErrors as exc:
        ctx.audit("app.create", "failed", detail=f"import: invalid: {', '.join(exc.errors)}")
        raise
    keys = [f"apps[{i}].name" for i in range(len(configs))]
    records = _start_new(ctx, configs, keys, " (imported)")
    return [_done(records, str(c["name"]), "starting it") for c in configs]


def _start_new(
    ctx: Ctx, configs: list[dict[str, Any]], keys: list[str], how: str = ""
) -> list[dict[str, Any]]:
    """Start new apps (validated and confined), all or none; their process records.

    Count-then-start runs under the tenant's create lock: names that exist already are
    FieldErrors (under `keys[i]`), the app limit counts every new app at once, and the
    daemon's own limit (LIMIT_REACHED) answers the same way. Each app is audited."""
    tenant = _tenant(ctx)
    names = [str(c["name"]) for c in configs]

    def audit_each(result: str, why: Callable[[str], str]) -> None:
        for name in names:
            ctx.audit("app.create", result, app=name, detail=why(name))

    daemon = _daemon(ctx)
    with _create_lock(tenant.id):
        try:
            apps = summarize(daemon.processes())
        except GatewayError as exc:
            message = exc.message
            audit_each("failed", lambda _: message)
            raise failure_of(exc) from None
        existing = {app.name for app in apps}
        taken = {
            keys[i]: f"an app named {name!r} already exists"
            for i, name in enumerate(names)
            if name in existing
        }
        if taken:
            audit_each(
                "failed",
                lambda n: (
                    "an app of that name exists"
                    if n in existing
                    else "not started: another app of the same config exists"
                ),
            )
            raise FieldErrors(taken)
        problem = limit_problem(tenant, len(apps), len(configs))
        if problem is not None:
            audit_each("denied", lambda _: problem)
            raise LimitReached(problem)
        scripts = {str(c["name"]): f"script {c['script']}{how}" for c in configs}
        try:
            records = daemon.start(configs)
        except GatewayError as exc:
            result, message = "denied" if isinstance(exc, LimitRefused) else "failed", exc.message
            audit_each(result, lambda n: f"{scripts[n]}: {message}")
            raise failure_of(exc) from None
        audit_each("ok", lambda n: scripts[n])
    return records


# --- the config editor --------------------------------------------------------------------

_DURATIONS = frozenset(
    {
        "min_uptime",
        "restart_delay",
        "exp_backoff_restart_delay",
        "watch_delay",
        "kill_timeout",
        "listen_timeout",
        "watchdog",
    }
)
_ALWAYS = ("name", "script", "args", "cwd", "interpreter", "instances", "exec_mode", "env")
_RUNTIME_ONLY = frozenset({"user", "group"})
"""Never offered for editing: the panel refuses them (a tenant cannot switch users)."""
_DEFAULTS: dict[str, Any] = {
    f.name: getattr(AppConfig(name="x", script="x"), f.name) for f in fields(AppConfig)
}


def _seconds(value: float) -> str:
    """A duration in seconds as a config file takes it: bare numbers there are ms."""
    return f"{value:g}s"


def editable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a user wrote, from `describe`'s canonical config: the main keys always,
    the rest only where they differ from corral's defaults, in the model's order."""
    out: dict[str, Any] = {}
    for key in AppConfig.field_names():
        if key not in config or key in _RUNTIME_ONLY:
            continue
        value = config[key]
        if key not in _ALWAYS and value == _DEFAULTS.get(key):
            continue
        if key == "interpreter" and value is None:
            continue
        if key in _DURATIONS and isinstance(value, int | float):
            value = _seconds(float(value))
        elif key == "umask" and isinstance(value, int):
            value = f"0o{value:03o}"
        out[key] = value
    return out


def config_yaml(config: Mapping[str, Any]) -> str:
    document = {"apps": [editable_config(config)]}
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return text


@dataclass(frozen=True)
class ConfigProblem:
    where: str
    """"line 4", "apps[0].kill_timeout" or "" for the text as a whole."""
    message: str


def config_problems(errors: Mapping[str, str]) -> list[ConfigProblem]:
    """FieldErrors of a config text as a list to show above the editor."""
    out = []
    for key, message in errors.items():
        where = "" if key in ("config", "_form") else key.removeprefix("apps[0].")
        out.append(ConfigProblem(where, message))
    return out


def parse_config(ctx: Ctx, name: str, text: str, fmt: str) -> dict[str, Any]:
    """The one app of an edited config, validated and confined; FieldErrors otherwise."""
    if fmt not in FORMATS:
        raise FieldErrors({"format": f"expected yaml, json or toml, got {fmt!r}"})
    home = _tenant(ctx).home
    apps = confined(ctx, "app.config", lambda c, b: config_text_to_apps(text, fmt, home, c, b))
    if len(apps) != 1:
        raise FieldErrors({"config": f"expected exactly one app, found {len(apps)}"})
    config = apps[0]
    if config["name"] != name:
        raise FieldErrors(
            {
                "apps[0].name": f"this is the config of {name!r}; renaming is not possible "
                f"here (got {config['name']!r}): create a new app instead"
            }
        )
    return config


def apply_config(
    ctx: Ctx,
    name: str,
    text: str,
    fmt: str,
    mode: str,
    *,
    action: str = "app.config",
    subject: str = "",
) -> Done:
    """Check an edited config and apply it with a restart or a zero-downtime reload.

    Audited as `action`, its details prefixed with `subject` ("variable MODE, ...") when
    a caller edits one part of the config. Raises FieldErrors (nothing changed; audited
    as failed) or ActionFailed."""
    lead = f"{subject}, " if subject else ""
    if mode not in ("restart", "reload"):
        ctx.audit(action, "failed", app=name, detail=f"{lead}apply {mode!r}: not restart/reload")
        raise FieldErrors({"apply": f"expected restart or reload, got {mode!r}"})
    daemon = _daemon(ctx)
    try:
        daemon.describe(name)  # the app must exist: a restart with "apps" would add it
    except GatewayError as exc:
        ctx.audit(action, "failed", app=name, detail=f"{lead}{exc.message}")
        raise failure_of(exc) from None
    try:
        config = parse_config(ctx, name, text, fmt)
    except FieldErrors as exc:
        ctx.audit(action, "failed", app=name, detail=f"{lead}invalid: {', '.join(exc.errors)}")
        raise
    records = _audited_call(
        ctx,
        action,
        name,
        f"{lead}applied with {mode}",
        lambda: daemon.call(mode, apps=[config]),
    )
    return _done(records, name, f"the {mode}")
