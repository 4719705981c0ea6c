"""A tenant's apps: create, act (start/stop/restart/reload), scale, delete, the overview
and the config editor, as pages (plain forms, 303 back with a message) and as the JSON
API under /api/v1/tenants/{tenant}/apps. The logic both share is corral/panel/apps_service.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from corral.config.filenames import FORMATS as CONFIG_SUFFIXES
from corral.config.filenames import is_procfile_name
from corral.panel import apps_service as svc
from corral.panel.apps_service import ActionFailed, LimitReached, Verb
from corral.panel.gateway import DaemonDown, GatewayError
from corral.panel.openapi import describe
from corral.panel.permissions import Need, Right, tenant
from corral.panel.routes.tenants import render_with_flash, set_flash
from corral.panel.routing import Ctx, HttpError, registry
from corral.panel.services import TenantRef
from corral.panel.validation import MAX_CONFIG_CHARS, FieldErrors

_PAST = {
    "start": "Started",
    "stop": "Stopped",
    "restart": "Restarted",
    "reload": "Reloaded",
}

# --- OpenAPI shapes ------------------------------------------------------------------------

_MEMBER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "instance": {"type": "integer"},
        "pid": {"type": ["integer", "null"]},
        "status": {"type": "string"},
        "cpu": {"type": ["number", "null"]},
        "memory": {"type": ["integer", "null"]},
        "uptime": {"type": ["number", "null"]},
        "restarts": {"type": "integer"},
        "started_at": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "last_exit": {"type": ["string", "null"]},
    },
}
APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An app and its instances, as a row of the process table.",
    "properties": {
        "name": {"type": "string"},
        "id": {"type": "integer"},
        "status": {
            "enum": [
                "online",
                "stopped",
                "errored",
                "launching",
                "stopping",
                "waiting-restart",
                "partial",
            ]
        },
        "label": {"type": "string", "description": "The status in words: '2 of 3 online'."},
        "instances": {"type": "integer"},
        "exec_mode": {"enum": ["fork", "cluster"]},
        "cpu": {"type": ["number", "null"], "description": "Percent of one core, summed."},
        "memory": {"type": ["integer", "null"], "description": "RSS bytes, summed."},
        "uptime": {"type": ["number", "null"], "description": "Youngest running instance, s."},
        "restarts": {"type": "integer"},
        "members": {"type": "array", "items": _MEMBER},
    },
}
LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tenant": {"type": "string"},
        "apps": {"type": "array", "items": APP_SCHEMA},
        "count": {"type": "integer", "description": "How many apps the tenant has."},
        "limit": {"type": "integer", "description": "The app limit: -1 unlimited, 0 none."},
    },
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "app": APP_SCHEMA,
        "processes": {
            "type": "array",
            "description": "The app's process records (the `corral jlist` schema).",
            "items": {"type": "object"},
        },
    },
}
_TEXT = {"type": "string"}
CREATE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "script"],
    "properties": {
        "name": _TEXT,
        "script": {"type": "string", "description": "A file inside the tenant's home."},
        "args": {"type": ["string", "array"], "items": _TEXT},
        "cwd": {"type": "string", "description": "A folder inside the tenant's home."},
        "interpreter": _TEXT,
        "instances": {"type": ["integer", "string"]},
        "exec_mode": {"enum": ["fork", "cluster"]},
        "env": {
            "type": ["object", "string"],
            "description": "{NAME: value}, or KEY=VALUE lines.",
            "additionalProperties": _TEXT,
        },
        "max_memory_restart": {"type": ["string", "integer"], "description": "300M, 1G..."},
        "cron_restart": _TEXT,
        "autorestart": {"type": "boolean"},
        "watch": {"type": ["boolean", "array"], "items": _TEXT},
        "listen": {"type": ["string", "array"], "items": _TEXT},
    },
}
SCALE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["count"],
    "properties": {
        "count": {
            "type": ["string", "integer"],
            "description": "'+1', '-1' or a number of instances.",
        }
    },
}
CONFIG_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "description": "The app's config, one app."},
        "format": {"enum": ["yaml", "json", "toml"], "default": "yaml"},
        "apply": {"enum": ["restart", "reload"], "default": "restart"},
    },
}
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": _TEXT, "format": {"const": "yaml"}, "config": {"type": "object"}},
}

# --- helpers -------------------------------------------------------------------------------


def _tenant(ctx: Ctx) -> TenantRef:
    assert ctx.tenant is not None  # every route here has {tenant}
    return ctx.tenant


def _app(ctx: Ctx) -> str:
    return ctx.params["app"]


def _home(ctx: Ctx) -> str:
    return f"/t/{_tenant(ctx).name}"


def _back(ctx: Ctx, default: str) -> str:
    """Where a form goes back to: a page of this tenant, never elsewhere."""
    back = str(ctx.data().get("back", ""))
    prefix = _home(ctx)
    if (back == prefix or back.startswith(prefix + "/")) and "//" not in back and "\\" not in back:
        return back
    return default


def _json_error(exc: ActionFailed | FieldErrors) -> Response:
    if isinstance(exc, FieldErrors):
        return JSONResponse({"error": "invalid input", "errors": exc.errors}, status_code=422)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _page_action(ctx: Ctx, run: Callable[[], str], back: str) -> Response:
    """Run a form's action; 303 to `back` with its outcome as a flash message."""
    try:
        message = run()
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return set_flash(ctx, ctx.redirect(back), exc.message, "bad")
    except FieldErrors as exc:
        return set_flash(ctx, ctx.redirect(back), "; ".join(exc.errors.values()), "bad")
    return set_flash(ctx, ctx.redirect(back), message)


# --- the list and creation -----------------------------------------------------------------


@registry.api("/api/v1/tenants/{tenant}/apps", need=tenant(Right.ACCESS))
@describe(response=LIST_SCHEMA)
def api_apps(ctx: Ctx) -> Response:
    """The tenant's apps with their instances (what the process table shows)."""
    return JSONResponse(svc.snapshot(ctx.panel, _tenant(ctx)))


@registry.api("/api/v1/tenants/{tenant}/apps", need=tenant(Right.MANAGE), methods=("POST",))
@describe(body=CREATE_BODY, response=RESULT_SCHEMA)
def api_create_app(ctx: Ctx) -> Response:
    """Create and start an app (paths confined to the tenant's home; the app limit holds)."""
    try:
        done = svc.create(ctx, ctx.data())
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse(done.to_json(), status_code=201)


def _new_form(ctx: Ctx, status: int = 200, **context: Any) -> Response:
    ref = _tenant(ctx)
    count, error = 0, ""
    try:
        count = len(svc.list_apps(ctx.panel, ref))
    except DaemonDown:
        pass  # not started yet (a page view never starts it): creating the app will
    except GatewayError as exc:
        error = exc.message
    context.setdefault("error", error)
    context.setdefault("limit_error", svc.limit_problem(ref, count) or "")
    context.setdefault("form", {})
    context.setdefault("errors", {})
    return ctx.render("app_new.html", status=status, count=count, limit=ref.app_limit, **context)


@registry.page("/t/{tenant}/apps/new", need=tenant(Right.MANAGE))
def new_app_page(ctx: Ctx) -> Response:
    """The form to create an app."""
    return _new_form(ctx)


@registry.page("/t/{tenant}/apps/new", need=tenant(Right.MANAGE), methods=("POST",))
def new_app(ctx: Ctx) -> Response:
    """Create and start the app the form describes; the form again, with errors, if not."""
    data = ctx.data()
    form = {k: str(v) for k, v in data.items() if k != "csrf_token"}
    try:
        app = svc.create(ctx, data).app
    except FieldErrors as exc:
        return _new_form(ctx, 422, form=form, errors=exc.errors)
    except LimitReached as exc:
        return _new_form(ctx, exc.status, form=form, limit_error=exc.message)
    except ActionFailed as exc:
        return _new_form(ctx, exc.status, form=form, error=exc.message)
    response = ctx.redirect(f"{_home(ctx)}/apps/{app.name}")
    return set_flash(ctx, response, f"Created {app.name}: {app.label}.")


# --- importing apps from a config text ------------------------------------------------------

IMPORT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {
            "type": "string",
            "description": "A config with one or more apps: a corral.yaml (its `apps` "
            "list), the same as JSON or TOML, or a Procfile's `name: command` lines.",
        },
        "format": {"enum": list(svc.IMPORT_FORMATS), "default": "yaml"},
    },
}
IMPORT_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "created": {"type": "array", "items": _TEXT, "description": "The apps started."},
        "apps": {"type": "array", "items": RESULT_SCHEMA},
    },
}
_AUTO = "auto"
"""The page's format choice "from the file's name" (YAML for pasted text)."""


def _format_of(filename: str) -> str | None:
    name = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    if is_procfile_name(name):
        return "procfile"
    return CONFIG_SUFFIXES.get("." + name.rsplit(".", 1)[-1].lower()) if "." in name else None


def _uploaded(ctx: Ctx) -> tuple[str, str, dict[str, Any]]:
    """(config text, format, what the form showed) from the import form: the text pasted
    or the file chosen (never both). FieldErrors next to the field when neither works."""
    data = ctx.data()
    text, fmt = str(data.get("text", "")), str(data.get("format", _AUTO))
    keep: dict[str, Any] = {"text": text, "fmt": fmt}
    upload = ctx.form.get("file") if ctx.form is not None else None
    chosen = isinstance(upload, UploadFile) and bool(upload.filename)
    if chosen and text.strip():
        raise FieldErrors({"file": "choose a file or paste a config, not both"})
    if chosen:
        assert isinstance(upload, UploadFile)
        filename = str(upload.filename)
        keep["filename"] = filename
        try:
            text = upload.file.read(MAX_CONFIG_CHARS * 4 + 1).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldErrors(
                {"file": f"{filename} is not UTF-8 text (byte {exc.start})"}
            ) from None
        if fmt == _AUTO:
            found = _format_of(filename)
            if found is None:
                raise FieldErrors(
                    {"format": f"cannot tell the format of {filename!r} from its name: choose it"}
                )
            fmt = found
    elif not text.strip():
        raise FieldErrors({"text": "paste a config here, or choose a file"})
    return text, "yaml" if fmt == _AUTO else fmt, keep


def _import_form(ctx: Ctx, status: int = 200, **context: Any) -> Response:
    ref = _tenant(ctx)
    count, error = 0, ""
    try:
        count = len(svc.list_apps(ctx.panel, ref))
    except DaemonDown:
        pass  # not started yet (a page view never starts it): the import will
    except GatewayError as exc:
        error = exc.message
    errors: dict[str, str] = context.pop("errors", {})
    context.setdefault("flash", error)
    context.setdefault("flash_kind", "bad")
    return ctx.render(
        "app_import.html",
        status=status,
        count=count,
        limit=ref.app_limit,
        formats=svc.IMPORT_FORMATS,
        errors=errors,
        problems=[
            svc.ConfigProblem("" if key == "config" else key, message)
            for key, message in errors.items()
            if key.startswith("apps[") or key == "config"
        ],
        **{"text": "", "fmt": _AUTO, **context},
    )


@registry.page("/t/{tenant}/apps/import", need=tenant(Right.MANAGE))
def import_apps_page(ctx: Ctx) -> Response:
    """The form to create apps from a config file (corral.yaml, JSON, TOML, Procfile)."""
    return _import_form(ctx)


@registry.page("/t/{tenant}/apps/import", need=tenant(Right.MANAGE), methods=("POST",))
def import_apps(ctx: Ctx) -> Response:
    """Create and start every app of the uploaded config, all or none."""
    keep: dict[str, Any] = {"text": str(ctx.data().get("text", "")), "fmt": _AUTO}
    try:
        text, fmt, keep = _uploaded(ctx)
    except FieldErrors as exc:
        ctx.audit("app.create", "failed", detail=f"import: {exc}")
        return _import_form(ctx, 422, errors=exc.errors, **keep)
    try:
        done = svc.import_apps(ctx, text, fmt)
    except FieldErrors as exc:
        return _import_form(ctx, 422, errors=exc.errors, **keep)
    except ActionFailed as exc:
        return _import_form(ctx, exc.status, flash=exc.message, **keep)
    names = [d.app.name for d in done]
    many = "app" if len(names) == 1 else f"{len(names)} apps"
    return set_flash(
        ctx, ctx.redirect(_home(ctx)), f"Imported and started {many}: {', '.join(names)}."
    )


@registry.api("/api/v1/tenants/{tenant}/apps/import", need=tenant(Right.MANAGE), methods=("POST",))
@describe(body=IMPORT_BODY, response=IMPORT_RESULT)
def api_import_apps(ctx: Ctx) -> Response:
    """Create and start every app of a config text, all or none (confined paths; the app
    limit counts them all; names that exist are refused)."""
    data = ctx.data()
    text, fmt = data.get("text"), data.get("format", "yaml")
    if not isinstance(text, str):
        return _json_error(FieldErrors({"text": "required: the config text"}))
    if not isinstance(fmt, str):
        return _json_error(
            FieldErrors({"format": "expected text: " + ", ".join(svc.IMPORT_FORMATS)})
        )
    try:
        done = svc.import_apps(ctx, text, fmt)
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    body = {"created": [d.app.name for d in done], "apps": [d.to_json() for d in done]}
    return JSONResponse(body, status_code=201)


# --- one app: overview and describe --------------------------------------------------------


@registry.page("/t/{tenant}/apps/{app}", need=tenant(Right.ACCESS))
def app_page(ctx: Ctx) -> Response:
    """The app's overview: instances, usage, chart, settings (never env values)."""
    detail = ctx.panel.daemon(_tenant(ctx)).describe(_app(ctx))
    app = svc.summary_of(detail.get("instances") or [], detail["name"]) or svc.BLANK
    config: Mapping[str, Any] = detail.get("config") or {}
    starts = [m.started_at for m in app.members if m.started_at]
    return render_with_flash(
        ctx,
        "app.html",
        app=app,
        app_name=detail["name"],
        config=config,
        env_count=len(config.get("env") or {}),
        created_at=detail.get("created_at"),
        last_start=max(starts) if starts else None,
        events=list(reversed(detail.get("events") or []))[:15],
    )


@registry.api("/api/v1/tenants/{tenant}/apps/{app}", need=tenant(Right.ACCESS))
@describe(response=RESULT_SCHEMA)
def api_app(ctx: Ctx) -> Response:
    """One app: its row, its settings (env names only, never values) and recent events."""
    detail = ctx.panel.daemon(_tenant(ctx)).describe(_app(ctx))
    records = list(detail.get("instances") or [])
    app = svc.summary_of(records, detail["name"]) or svc.BLANK
    config = dict(detail.get("config") or {})
    config["env"] = sorted(config.get("env") or {})  # names: values may be secrets
    config.pop("env_profiles", None)
    body = svc.Done(app, records).to_json() | {
        "config": config,
        "created_at": detail.get("created_at"),
        "desired": detail.get("desired"),
        "events": detail.get("events") or [],
    }
    return JSONResponse(body)


# --- actions -------------------------------------------------------------------------------


def _register_verb(verb: Verb) -> None:
    need: Need = tenant(Right.CONTROL)

    def page(ctx: Ctx) -> Response:
        name = _app(ctx)

        def run() -> str:
            app = svc.act(ctx, name, verb).app
            return f"{_PAST[verb]} {name}: {app.label}."

        return _page_action(ctx, run, _back(ctx, _home(ctx)))

    def api(ctx: Ctx) -> Response:
        try:
            done = svc.act(ctx, _app(ctx), verb)
        except ActionFailed as exc:
            return _json_error(exc)
        return JSONResponse(done.to_json())

    page.__doc__ = f"{verb.capitalize()} the app (form; 303 back with the outcome)."
    api.__doc__ = f"{verb.capitalize()} the app; its process records afterwards."
    registry.page(
        f"/t/{{tenant}}/apps/{{app}}/{verb}", need=need, methods=("POST",), name=f"app_{verb}"
    )(page)
    registry.api(
        f"/api/v1/tenants/{{tenant}}/apps/{{app}}/{verb}",
        need=need,
        methods=("POST",),
        name=f"api_app_{verb}",
    )(describe(response=RESULT_SCHEMA)(api))


for _verb in svc.VERBS:
    _register_verb(_verb)


@registry.page("/t/{tenant}/apps/{app}/scale", need=tenant(Right.CONTROL), methods=("POST",))
def app_scale(ctx: Ctx) -> Response:
    """Scale the app: count "+1", "-1" or N (form; 303 back)."""
    name = _app(ctx)

    def run() -> str:
        app = svc.scale(ctx, name, ctx.data().get("count", "")).app
        many = "instance" if app.instances == 1 else "instances"
        return f"Scaled {name} to {app.instances} {many}."

    return _page_action(ctx, run, _back(ctx, _home(ctx)))


@registry.api(
    "/api/v1/tenants/{tenant}/apps/{app}/scale", need=tenant(Right.CONTROL), methods=("POST",)
)
@describe(body=SCALE_BODY, response=RESULT_SCHEMA)
def api_app_scale(ctx: Ctx) -> Response:
    """Scale the app to N instances, or by +N / -N; never counts as a new app."""
    try:
        done = svc.scale(ctx, _app(ctx), ctx.data().get("count", ""))
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse(done.to_json())


@registry.page("/t/{tenant}/apps/{app}/delete", need=tenant(Right.MANAGE), methods=("POST",))
def app_delete(ctx: Ctx) -> Response:
    """Stop and delete the app (form, after confirmation; 303 to the table)."""
    name = _app(ctx)

    def run() -> str:
        svc.delete(ctx, name)
        return f"Deleted {name}."

    return _page_action(ctx, run, _home(ctx))  # never back to the page of an app gone


@registry.api(
    "/api/v1/tenants/{tenant}/apps/{app}/delete", need=tenant(Right.MANAGE), methods=("POST",)
)
@describe(response={"type": "object", "properties": {"deleted": {"type": "array"}}})
def api_app_delete(ctx: Ctx) -> Response:
    """Stop the app and forget it."""
    try:
        deleted = svc.delete(ctx, _app(ctx))
    except ActionFailed as exc:
        return _json_error(exc)
    return JSONResponse({"deleted": deleted})


# --- the config editor ---------------------------------------------------------------------


def _config_form(ctx: Ctx, status: int = 200, **context: Any) -> Response:
    context.setdefault("errors", [])
    context.setdefault("fmt", "yaml")
    context.setdefault("apply", "restart")
    return render_with_flash(ctx, "app_config.html", status=status, app_name=_app(ctx), **context)


@registry.page("/t/{tenant}/apps/{app}/config", need=tenant(Right.MANAGE))
def app_config_page(ctx: Ctx) -> Response:
    """The app's config as YAML, to edit."""
    detail = ctx.panel.daemon(_tenant(ctx)).describe(_app(ctx))
    return _config_form(ctx, text=svc.config_yaml(detail.get("config") or {}))


@registry.page("/t/{tenant}/apps/{app}/config", need=tenant(Right.MANAGE), methods=("POST",))
def app_config_save(ctx: Ctx) -> Response:
    """Check the edited config and apply it (restart or zero-downtime reload)."""
    data = ctx.data()
    name = _app(ctx)
    text, fmt, mode = (
        str(data.get("text", "")),
        str(data.get("format", "yaml")),
        str(data.get("apply", "restart")),
    )
    keep = {"text": text, "fmt": fmt, "apply": mode}
    try:
        app = svc.apply_config(ctx, name, text, fmt, mode).app
    except FieldErrors as exc:
        return _config_form(ctx, 422, errors=svc.config_problems(exc.errors), **keep)
    except ActionFailed as exc:
        if exc.status == 404:
            raise HttpError(404, exc.message) from None
        return _config_form(ctx, exc.status, flash=exc.message, flash_kind="bad", **keep)
    how = "reloaded without downtime" if mode == "reload" else "restarted"
    response = ctx.redirect(f"{_home(ctx)}/apps/{name}")
    return set_flash(ctx, response, f"Saved the config of {name} and {how}: {app.label}.")


@registry.api("/api/v1/tenants/{tenant}/apps/{app}/config", need=tenant(Right.MANAGE))
@describe(response=CONFIG_SCHEMA)
def api_app_config(ctx: Ctx) -> Response:
    """The app's config as the editor shows it (YAML text, and as an object)."""
    detail = ctx.panel.daemon(_tenant(ctx)).describe(_app(ctx))
    config = detail.get("config") or {}
    return JSONResponse(
        {"text": svc.config_yaml(config), "format": "yaml", "config": svc.editable_config(config)}
    )


@registry.api(
    "/api/v1/tenants/{tenant}/apps/{app}/config", need=tenant(Right.MANAGE), methods=("PUT",)
)
@describe(body=CONFIG_BODY, response=RESULT_SCHEMA)
def api_app_config_put(ctx: Ctx) -> Response:
    """Replace the app's config and apply it; 422 with every problem, nothing changed."""
    data = ctx.data()
    text = data.get("text")
    if not isinstance(text, str):
        return _json_error(FieldErrors({"text": "required: the config text"}))
    try:
        done = svc.apply_config(
            ctx, _app(ctx), text, str(data.get("format", "yaml")), str(data.get("apply", "restart"))
        )
    except (ActionFailed, FieldErrors) as exc:
        return _json_error(exc)
    return JSONResponse(done.to_json())
