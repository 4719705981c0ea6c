"""An app's environment as the panel edits it (the Environment tab and its JSON API).

Two kinds of variables:
- plain ones live in the app's config (`env`). By default ("later") saving one stores the
  changed config with the daemon's `configure`, which restarts nothing; the user may ask
  for "restart" or "reload" instead, which go through the config editor's path
  (`apps_service.apply_config`);
- secrets are kept, encrypted, by the tenant's daemon (`secret_set`, `secret_list`,
  `secret_remove`). Saving one restarts nothing. A value goes to the daemon and never
  comes back: nothing here returns, logs, audits or echoes it.
A change that restarted nothing applies from the app's next start, and the page offers
Restart and Reload.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.panel import apps_service as svc
from corral.panel.apps_service import ActionFailed, Done
from corral.panel.gateway import GatewayError, Refused
from corral.panel.validation import MAX_ENV_NAME, FieldError, FieldErrors, env_value
from corral.protocol.wire import ErrorCode
from corral.secrets.store import MAX_VALUE_BYTES

if TYPE_CHECKING:
    from corral.panel.routing import Ctx

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_MAX_BYTES = MAX_VALUE_BYTES  # the daemon store's limit, said in the form
APPLY_MODES = ("later", "restart", "reload")
"""later (the default): saved, applied at the next start; restart, reload: applied now."""

_edit_locks: dict[tuple[str, str], threading.Lock] = {}
_edit_locks_guard = threading.Lock()


def _edit_lock(tenant: str, app: str) -> threading.Lock:
    """Read-change-apply of one app's env is one step: two edits at once never lose one."""
    with _edit_locks_guard:
        return _edit_locks.setdefault((tenant, app), threading.Lock())


@dataclass(frozen=True)
class SecretRow:
    name: str
    set_at: float


@dataclass(frozen=True)
class EnvView:
    """What the Environment tab shows: plain variables with values, secrets by name."""

    app: str
    env: dict[str, str]
    secrets: list[SecretRow]
    missing: list[str] = field(default_factory=list)
    """Names the app's config lists under `secrets:` that are not set (it cannot start)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "env": dict(self.env),
            "secrets": [{"name": s.name, "set_at": s.set_at} for s in self.secrets],
        }

    def kind_of(self, name: str) -> str | None:
        if any(s.name == name for s in self.secrets):
            return "secret"
        return "variable" if name in self.env else None


@dataclass(frozen=True)
class Saved:
    """The outcome of a save or a removal."""

    name: str
    secret: bool
    set_at: float | None = None
    applied: str | None = None
    """"restart" or "reload" when the change was applied; None when it applies from the
    app's next start (a secret, or a plain variable saved "later")."""
    done: Done | None = None
    replaced: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "secret": self.secret,
            "set_at": self.set_at,
            "applied": self.applied,
            "pending": self.applied is None,
        }
        if self.done is not None:
            body |= self.done.to_json()
        return body


def _tenant_name(ctx: Ctx) -> str:
    if ctx.tenant is None:  # every env route has {tenant}; the wrapper resolved it
        raise RuntimeError("an env route without a tenant")
    return ctx.tenant.name


def read_env(ctx: Ctx, app: str) -> EnvView:
    """The app's variables and secrets; NotFound (404) for an unknown app."""
    daemon = svc._daemon(ctx)
    config: Mapping[str, Any] = daemon.describe(app).get("config") or {}
    rows = sorted(
        (
            SecretRow(str(s["name"]), float(s.get("set_at") or 0))
            for s in daemon.secret_list(app)
            if s.get("app") == app and isinstance(s.get("name"), str)
        ),
        key=lambda s: s.name,
    )
    env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}
    names = {s.name for s in rows}
    missing = [n for n in config.get("secrets") or [] if isinstance(n, str) and n not in names]
    return EnvView(app, env, rows, missing)


# --- checking input (never echoing a value) ------------------------------------------------


def flag(value: object) -> bool:
    """A JSON boolean or a checkbox ("on"); anything else is false."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("on", "true", "1", "yes")


def check_name(value: object, *, secret: bool) -> str:
    """An environment variable name (a secret's: at most 128 characters, as the daemon's
    store takes them). The message never repeats what was typed: a value pasted into the
    wrong field must not come back, nor reach the audit log."""
    text = value.strip() if isinstance(value, str) else None
    longest = 128 if secret else MAX_ENV_NAME
    if text is None or not ENV_NAME_RE.fullmatch(text) or len(text) > longest:
        raise FieldErrors(
            {
                "name": "a variable name is letters, digits and _, not starting with a digit, "
                f"at most {longest} characters"
            }
        )
    return text


def _shown(name: object) -> str:
    """The name for an audit entry: only a valid one (anything else might be a value)."""
    try:
        return check_name(name, secret=False)
    except FieldErrors:
        return "(invalid name)"


def check_secret_value(value: object) -> str:
    """The rules of the daemon's store, said without repeating any of the value."""
    if not isinstance(value, str):
        raise FieldErrors({"value": "expected the secret's value as a string"})
    if value == "":
        raise FieldErrors({"value": "a secret cannot be empty (remove it instead)"})
    if "\x00" in value:
        raise FieldErrors({"value": "a value cannot contain a NUL character"})
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise FieldErrors({"value": "the value is not valid text (a lone surrogate)"}) from None
    if size > SECRET_MAX_BYTES:
        raise FieldErrors({"value": f"a secret is at most {SECRET_MAX_BYTES} bytes of UTF-8"})
    return value


def check_plain_value(value: object) -> str:
    if not isinstance(value, str):
        raise FieldErrors({"value": "expected the value as a string"})
    try:
        text = env_value(value, "value")
        text.encode("utf-8")
    except FieldError as exc:
        raise FieldErrors({"value": exc.message}) from None
    except UnicodeEncodeError:
        raise FieldErrors({"value": "the value is not valid text (a lone surrogate)"}) from None
    return text


def check_apply(value: object) -> str:
    mode = value if isinstance(value, str) and value else "later"
    if mode not in APPLY_MODES:
        raise FieldErrors({"apply": "expected later, restart or reload"})
    return mode


# --- saving and removing -------------------------------------------------------------------


def _daemon_failure(exc: GatewayError) -> ActionFailed:
    """A refused secret is the user's input (422); the rest as for any daemon call."""
    if isinstance(exc, Refused) and exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.INVALID_ARGUMENT):
        return ActionFailed(422, exc.message)
    return svc.failure_of(exc)


def _read_for_change(ctx: Ctx, app: str, action: str, subject: str) -> EnvView:
    try:
        return read_env(ctx, app)
    except GatewayError as exc:
        message = exc.message
        ctx.audit(action, "failed", app=app, detail=f"{subject}: {message}")
        raise svc.failure_of(exc) from None


def set_variable(ctx: Ctx, app: str, data: Mapping[str, Any], name: object) -> Saved:
    """Add or change one variable: `data` has "value", "secret" and, for a plain variable,
    "apply" (later, the default, restart or reload). Raises FieldErrors or ActionFailed, each
    audited; a value is never part of an audit entry or a message."""
    secret = flag(data.get("secret"))
    kind = "secret" if secret else "variable"
    action = "app.secret.set" if secret else "app.env.set"
    errors: dict[str, str] = {}
    checked: dict[str, str] = {}
    value_check = check_secret_value if secret else check_plain_value
    checks: tuple[tuple[str, Callable[[], str]], ...] = (
        ("name", lambda: check_name(name, secret=secret)),
        ("value", lambda: value_check(data.get("value"))),
        ("apply", lambda: "" if secret else check_apply(data.get("apply"))),
    )
    for key, check in checks:
        try:
            checked[key] = check()
        except FieldErrors as exc:
            errors |= exc.errors
    if errors:
        detail = f"{kind} {_shown(name)}: invalid {', '.join(errors)}"
        ctx.audit(action, "failed", app=app, detail=detail)
        raise FieldErrors(errors)
    var, value = checked["name"], checked["value"]
    subject = f"{kind} {var}"
    with _edit_lock(_tenant_name(ctx), app):
        view = _read_for_change(ctx, app, action, subject)
        have = view.kind_of(var)
        if secret and have == "variable":
            message = (
                f"{var} is a plain variable of {app}: remove it first, then add it as a secret"
            )
            ctx.audit(action, "failed", app=app, detail=f"{subject}: a plain variable exists")
            raise ActionFailed(409, message)
        if not secret and have == "secret":
            message = f"{var} is a secret of {app}: remove the secret first to make it plain"
            ctx.audit(action, "failed", app=app, detail=f"{subject}: a secret exists")
            raise ActionFailed(409, message)
        if secret:
            return _set_secret(ctx, app, var, value, replace=have == "secret")
        return _set_plain(ctx, app, view, var, value, checked["apply"])


def _set_secret(ctx: Ctx, app: str, name: str, value: str, *, replace: bool) -> Saved:
    action = "app.secret.replace" if replace else "app.secret.set"
    try:
        answer = svc._daemon(ctx).secret_set(app, name, value)
    except GatewayError as exc:
        ctx.audit(action, "failed", app=app, detail=f"secret {name}: {exc.message}")
        raise _daemon_failure(exc) from None
    ctx.audit(action, app=app, detail=f"secret {name}; applies from the next start")
    set_at = answer.get("set_at")
    return Saved(name, True, float(set_at) if isinstance(set_at, int | float) else None,
                 replaced=replace)  # fmt: skip


def _set_plain(ctx: Ctx, app: str, view: EnvView, name: str, value: str, mode: str) -> Saved:
    env = dict(view.env)
    replaced = name in env
    env[name] = value
    done = _apply_env(ctx, app, env, mode, "app.env.set", f"variable {name}")
    return Saved(name, False, applied=_applied(mode), done=done, replaced=replaced)


def _applied(mode: str) -> str | None:
    return None if mode == "later" else mode


def _apply_env(
    ctx: Ctx, app: str, env: dict[str, str], mode: str, action: str, subject: str
) -> Done:
    """The app's config with this env, checked as the config editor checks it (validated,
    confined) and audited as `action`: stored for the next start ("later": the daemon's
    `configure`, nothing restarted) or applied at once by `mode` (restart, reload)."""
    daemon = svc._daemon(ctx)
    try:
        config = dict(daemon.describe(app).get("config") or {})
    except GatewayError as exc:
        ctx.audit(action, "failed", app=app, detail=f"{subject}: {exc.message}")
        raise svc.failure_of(exc) from None
    config["env"] = env
    text = svc.config_yaml(config)
    if mode != "later":
        return svc.apply_config(ctx, app, text, "yaml", mode, action=action, subject=subject)
    try:
        checked = svc.parse_config(ctx, app, text, "yaml")
    except FieldErrors as exc:
        ctx.audit(action, "failed", app=app, detail=f"{subject}, invalid: {', '.join(exc.errors)}")
        raise
    detail = f"{subject}, saved; applies from the next start"
    records = svc._audited_call(ctx, action, app, detail, lambda: daemon.configure([checked]))
    return svc._done(records, app, "saving")


def remove_variable(ctx: Ctx, app: str, name: object, kind: str | None, mode: object) -> Saved:
    """Remove a secret or a plain variable. `kind` "secret" or "variable" says which (a
    name may be both); None: the secret if there is one, else the plain variable."""
    action = "app.secret.remove" if kind == "secret" else "app.env.remove"
    try:
        var = check_name(name, secret=False)
        if kind not in (None, "secret", "variable"):
            raise FieldErrors({"kind": "expected secret or variable"})
        apply = check_apply(mode)
    except FieldErrors as exc:
        ctx.audit(
            action, "failed", app=app, detail=f"{_shown(name)}: invalid {', '.join(exc.errors)}"
        )
        raise
    with _edit_lock(_tenant_name(ctx), app):
        view = _read_for_change(ctx, app, action, f"{kind or 'variable'} {var}")
        is_secret = any(s.name == var for s in view.secrets)
        is_plain = var in view.env
        if kind == "secret" or (kind is None and is_secret):
            if not is_secret:
                ctx.audit("app.secret.remove", "failed", app=app, detail=f"secret {var}: not set")
                raise ActionFailed(404, f"{app} has no secret named {var}")
            return _remove_secret(ctx, app, var)
        if not is_plain:
            ctx.audit("app.env.remove", "failed", app=app, detail=f"variable {var}: not set")
            raise ActionFailed(404, f"{app} has no variable named {var}")
        env = {k: v for k, v in view.env.items() if k != var}
        done = _apply_env(ctx, app, env, apply, "app.env.remove", f"variable {var}")
        return Saved(var, False, applied=_applied(apply), done=done, replaced=True)


def _remove_secret(ctx: Ctx, app: str, name: str) -> Saved:
    try:
        removed = svc._daemon(ctx).secret_remove(app, name)
    except GatewayError as exc:
        ctx.audit("app.secret.remove", "failed", app=app, detail=f"secret {name}: {exc.message}")
        raise _daemon_failure(exc) from None
    if not removed:  # gone between the listing and now
        ctx.audit("app.secret.remove", "failed", app=app, detail=f"secret {name}: not set")
        raise ActionFailed(404, f"{app} has no secret named {name}")
    ctx.audit("app.secret.remove", app=app, detail=f"secret {name}; applies from the next start")
    return Saved(name, True, replaced=True)
