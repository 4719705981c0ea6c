"""An app's git deploys as the panel shows and drives them (the Deploy tab and its API).

The tenant's daemon does the work (SPEC 4): it keeps the git source in the app's config,
builds releases, switches them and keeps the history. This module validates what a user
types with `corral.deploy.source` (the same rules the daemon and the CLI apply), saves a
git source with the daemon's `configure` (the app's current config plus `git`, nothing
restarted), and asks the daemon to deploy, roll back or make a deploy key. Every action
is audited with the user; a repository URL is only ever shown, logged or audited redacted
(`https://user:token@host` has a token in it).

Build steps are typed one per line and split with `shlex.split` into argv lists: they
are never run through a shell, and the page shows them back as argv lists.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.deploy.process import format_seconds
from corral.panel import apps_service as svc
from corral.panel.apps_service import ActionFailed
from corral.panel.gateway import GatewayError, NotFound, Refused, TenantDaemon
from corral.panel.validation import FieldErrors
from corral.protocol.wire import ErrorCode

if TYPE_CHECKING:
    from corral.deploy.source import GitSource
    from corral.panel.routing import Ctx

SOURCE_FIELDS = ("repo", "branch", "keep", "install", "steps", "timeout")
"""The git source's keys, in the order the form shows them."""
APP_FIELDS = ("script", "cwd")
"""The app's own keys the form sets with it: with a git source they are inside the release."""
MAX_STEPS = 32
MAX_STEP_LINE = 4096
HISTORY_LIMIT = 50
DEPLOY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a deploy or release id may look like in a URL or a form (the daemon's own ids
match it); anything else is refused before the daemon is asked."""
FINAL = frozenset({"succeeded", "failed"})

_edit_locks: dict[tuple[str, str], threading.Lock] = {}
_edit_locks_guard = threading.Lock()


def _edit_lock(tenant: str, app: str) -> threading.Lock:
    """Read-change-save of one app's config is one step: two edits never lose one."""
    with _edit_locks_guard:
        return _edit_locks.setdefault((tenant, app), threading.Lock())


# --- reading what the user typed -------------------------------------------------------


def parse_steps(value: object) -> list[list[str]]:
    """Build steps: text with one command per line (split like a shell would, never run
    by one), or, from the API, a list of argv lists or of such lines. FieldErrors naming
    `steps` (and the line) when one cannot be split or is not text."""
    if value is None or value == "":
        return []
    lines: list[object]
    if isinstance(value, str):
        lines = list(value.splitlines())
    elif isinstance(value, list):
        lines = list(value)
    else:
        raise FieldErrors({"steps": "expected one command per line, or a list of argv lists"})
    steps: list[list[str]] = []
    for number, line in enumerate(lines, 1):
        where = f"line {number}" if isinstance(value, str) else f"step {number}"
        if isinstance(line, list):
            if not line or not all(isinstance(arg, str) for arg in line):
                raise FieldErrors({"steps": f"{where}: expected a non-empty list of strings"})
            steps.append(list(line))
            continue
        if not isinstance(line, str):
            raise FieldErrors({"steps": f"{where}: expected a command as text or an argv list"})
        if len(line) > MAX_STEP_LINE:
            raise FieldErrors({"steps": f"{where}: longer than {MAX_STEP_LINE} characters"})
        try:
            argv = shlex.split(line)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise FieldErrors({"steps": f"{where}: {str(exc).lower()}"}) from None
        if argv:
            steps.append(argv)
    if len(steps) > MAX_STEPS:
        raise FieldErrors({"steps": f"at most {MAX_STEPS} steps, got {len(steps)}"})
    return steps


def _flag(value: object) -> bool | None:
    """A checkbox ("on"), or a JSON boolean; None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "off", "false", "0", "no"):
        return False
    return None


def _keep(value: object) -> object:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return value.strip() if isinstance(value, str) else value


def source_of(data: Mapping[str, Any], *, form: bool) -> GitSource:
    """The git source a form or an API body describes, validated by corral.deploy.source.

    FieldErrors keyed by the form's field names (repo, branch, keep, install, steps,
    timeout). From a form, a missing `install` is an unchecked box (False); from the API,
    a missing key takes the default."""
    from corral.deploy.source import SourceError, source_from_mapping

    errors: dict[str, str] = {}
    raw: dict[str, Any] = {}
    unknown = sorted(
        k for k in data if k not in SOURCE_FIELDS and k not in APP_FIELDS and k != "csrf_token"
    )
    if unknown and not form:
        errors[unknown[0]] = f"unknown key; expected {', '.join(SOURCE_FIELDS)}"
    repo = data.get("repo")
    raw["repo"] = repo.strip() if isinstance(repo, str) else repo
    for key in ("branch", "timeout"):
        value = data.get(key)
        if isinstance(value, str):
            value = value.strip()
        if value not in (None, ""):
            raw[key] = value
    if data.get("keep") not in (None, ""):
        raw["keep"] = _keep(data.get("keep"))
    install = _flag(data.get("install", "" if form else True))
    if install is None:
        errors["install"] = "expected true or false"
    else:
        raw["install"] = install
    try:
        raw["steps"] = parse_steps(data.get("steps"))
    except FieldErrors as exc:
        errors.update(exc.errors)
    # Each key on its own first (beside a placeholder repository), so that every field
    # with a mistake gets its message, not only the first one the library meets.
    for key, value in raw.items():
        single = {key: value} if key == "repo" else {"repo": _PLACEHOLDER, key: value}
        if key not in errors:
            errors.update(_problem(source_from_mapping, SourceError, single))
    if not errors:
        errors.update(_problem(source_from_mapping, SourceError, raw))
        if not errors:
            return source_from_mapping(raw)
    raise FieldErrors(errors)


_PLACEHOLDER = "https://example.invalid/placeholder.git"


def _problem(check: Any, error: type[Exception], raw: Mapping[str, Any]) -> dict[str, str]:
    """{form field: message} of what `check(raw)` refuses (a SourceError), else {}."""
    try:
        check(raw)
    except error as exc:
        key, _, index = (getattr(exc, "key", None) or "repo").partition("[")
        message = str(getattr(exc, "message", exc))
        if key == "steps" and index.rstrip("]").isdigit():
            message = f"step {int(index.rstrip(']')) + 1}: {message}"
        return {key if key in SOURCE_FIELDS else "repo": message}
    return {}


def release_path(value: object, field: str, *, required: bool) -> str | None:
    """`script` or `cwd` of a git app: a path inside the release (relative, never leaving
    it), or None when blank and not required. FieldErrors naming the field otherwise."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise FieldErrors({field: "required: the file to run, inside the release"})
        return None
    problem = ""
    normal = posixpath.normpath(text)
    if "\0" in text or any(ch.isspace() for ch in text):
        problem = "one path, without spaces (arguments go in the config's args)"
    elif posixpath.isabs(normal):
        problem = f"expected a path inside the release (relative), got {text!r}"
    elif normal == ".." or normal.startswith("../"):
        problem = f"{text!r} leads out of the release"
    elif field == "script" and normal == ".":
        problem = "expected a file, not the release's folder"
    if problem:
        raise FieldErrors({field: problem})
    return None if normal == "." else normal


def script_in_release(config: Mapping[str, Any], home: str) -> tuple[str, str]:
    """(script, cwd) to offer in the form: the app's own when it has a git source, else
    its script relative to its working directory (what a checkout would hold)."""
    script, cwd = str(config.get("script") or ""), str(config.get("cwd") or "")
    if config.get("git"):
        return script, cwd
    base = cwd or home
    if posixpath.isabs(script) and script.startswith(base.rstrip("/") + "/"):
        return posixpath.relpath(script, base), ""
    return script, ""


def check_ref(value: object) -> str | None:
    """The optional ref of "Deploy now": a branch, a tag or a commit id; None if blank."""
    from corral.deploy.source import SourceError
    from corral.deploy.source import check_ref as check

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise FieldErrors({"ref": "expected a branch, a tag or a commit id"})
    try:
        return check(value.strip())
    except SourceError as exc:
        raise FieldErrors({"ref": exc.message}) from None


def check_id(value: object, what: str = "release") -> str:
    if not isinstance(value, str) or not DEPLOY_ID_RE.fullmatch(value):
        raise FieldErrors({what: f"not a {what} id: {str(value)[:60]!r}"})
    return value


# --- what the page shows ---------------------------------------------------------------


def redact(url: str) -> str:
    from corral.deploy.source import redact as hide

    return hide(url)


@dataclass(frozen=True)
class SourceView:
    """The git source as anyone with access sees it: the repository URL redacted."""

    repo: str
    branch: str
    keep: int
    install: bool
    steps: list[list[str]]
    timeout: float

    @classmethod
    def of(cls, git: Mapping[str, Any]) -> SourceView:
        steps = git.get("steps") or []
        return cls(
            repo=redact(str(git.get("repo", ""))),
            branch=str(git.get("branch", "main")),
            keep=int(git.get("keep", 5)),
            install=bool(git.get("install", True)),
            steps=[[str(a) for a in step] for step in steps if isinstance(step, list)],
            timeout=float(git.get("timeout", 600.0)),
        )

    @property
    def steps_text(self) -> str:
        """The steps as the form's textarea holds them, one shell-quoted line each."""
        return "\n".join(shlex.join(step) for step in self.steps)

    @property
    def steps_shown(self) -> list[str]:
        """Each step as an argv list (what runs: no shell)."""
        return [json.dumps(step, ensure_ascii=False) for step in self.steps]

    @property
    def timeout_text(self) -> str:
        return format_seconds(self.timeout)

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "branch": self.branch,
            "keep": self.keep,
            "install": self.install,
            "steps": self.steps,
            "timeout": self.timeout,
        }


@dataclass
class DeployView:
    app: str
    source: SourceView | None
    script: str = ""
    """The app's script, inside the release (or as the form offers it, see
    `script_in_release`)."""
    cwd: str = ""
    public_key: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    """Why history or releases could not be read (shown, not fatal)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "source": self.source.to_json() if self.source else None,
            "script": self.script,
            "cwd": self.cwd or None,
            "public_key": self.public_key,
            "history": self.history,
            "releases": self.releases,
        }


def source_view(config: Mapping[str, Any]) -> SourceView | None:
    git = config.get("git")
    return SourceView.of(git) if isinstance(git, Mapping) and git.get("repo") else None


def view(ctx: Ctx, app: str) -> DeployView:
    """Everything the Deploy tab shows. An unknown app is NotFound (404)."""
    daemon = ctx.panel.daemon(svc._tenant(ctx))
    config = daemon.describe(app).get("config") or {}
    script, cwd = script_in_release(config, str(svc._tenant(ctx).home))
    shown = DeployView(app, source_view(config), script, cwd)
    try:
        shown.public_key = daemon.deploy_key(app, create=False)
        shown.history = daemon.deploy_history(app, HISTORY_LIMIT)
        shown.releases = daemon.releases(app)
    except NotFound:
        raise
    except GatewayError as exc:
        shown.problem = exc.message
    return shown


# --- actions (all audited with the user) -----------------------------------------------


def _trigger(ctx: Ctx) -> str:
    return f"panel: {ctx.user.username}"


def save_source(ctx: Ctx, app: str, data: Mapping[str, Any], *, form: bool) -> SourceView:
    """Validate the git source and store it in the app's config (`configure`: nothing is
    restarted; the next deploy uses it). FieldErrors (audited, nothing changed) or
    ActionFailed.

    The form shows the stored repository redacted; sent back unchanged, it means the
    stored URL with its credentials (they are never shown, so they could not be retyped)."""
    action = "app.deploy.source"
    daemon = svc._daemon(ctx)
    with _edit_lock(svc._tenant(ctx).name, app):
        try:
            config = dict(daemon.describe(app).get("config") or {})
        except GatewayError as exc:
            ctx.audit(action, "failed", app=app, detail=exc.message)
            raise svc.failure_of(exc) from None
        try:
            source, paths = _checked(_unredacted(data, config), form=form)
        except FieldErrors as exc:
            ctx.audit(action, "failed", app=app, detail=f"invalid: {', '.join(exc.errors)}")
            raise
        detail = f"repo {redact(source.repo)}, branch {source.branch}"
        config["git"] = source.to_dict()
        config["script"], config["cwd"] = paths["script"], paths["cwd"]
        svc._audited_call(ctx, action, app, detail, lambda: daemon.configure([config]))
    return SourceView.of(source.to_dict())


def _unredacted(data: Mapping[str, Any], config: Mapping[str, Any]) -> Mapping[str, Any]:
    git = config.get("git")
    stored = git.get("repo") if isinstance(git, Mapping) else None
    given = data.get("repo")
    if isinstance(stored, str) and isinstance(given, str) and given.strip() == redact(stored):
        return {**data, "repo": stored}
    return data


def _checked(data: Mapping[str, Any], *, form: bool) -> tuple[GitSource, dict[str, str | None]]:
    """The git source and the app's script and cwd in the release; every mistake at once."""
    errors: dict[str, str] = {}
    paths: dict[str, str | None] = {}
    for key, required in (("script", True), ("cwd", False)):
        try:
            paths[key] = release_path(data.get(key), key, required=required)
        except FieldErrors as exc:
            errors.update(exc.errors)
    try:
        source = source_of({k: v for k, v in data.items() if k not in APP_FIELDS}, form=form)
    except FieldErrors as exc:
        raise FieldErrors({**exc.errors, **errors}) from None
    if errors:
        raise FieldErrors(errors)
    return source, paths


def deploy(ctx: Ctx, app: str, ref: object) -> dict[str, Any]:
    """Queue a deploy of the app (at `ref`, default its branch); its record."""
    try:
        checked = check_ref(ref)
    except FieldErrors as exc:
        ctx.audit("app.deploy", "failed", app=app, detail=f"ref: {exc.errors['ref']}")
        raise
    daemon = svc._daemon(ctx)
    at = f"ref {checked}" if checked else "its branch"
    record = svc._audited_call(
        ctx,
        "app.deploy",
        app,
        "",
        lambda: daemon.deploy(app, checked, _trigger(ctx)),
        step=True,  # audited below, with the deploy's id
    )
    ctx.audit("app.deploy", app=app, detail=f"deploy {record['id']} of {at} queued")
    return record


def rollback(ctx: Ctx, app: str, release: object) -> dict[str, Any]:
    """Queue a switch back to `release` (blank: the one before the current one)."""
    wanted: str | None = None
    if isinstance(release, str) and release.strip():
        try:
            wanted = check_id(release.strip())
        except FieldErrors as exc:
            ctx.audit("app.rollback", "failed", app=app, detail=exc.errors["release"])
            raise
    elif release not in (None, ""):
        raise FieldErrors({"release": "expected a release id"})
    daemon = svc._daemon(ctx)
    record = svc._audited_call(
        ctx,
        "app.rollback",
        app,
        "",
        lambda: daemon.rollback(app, wanted, _trigger(ctx)),
        step=True,
    )
    target = wanted or "the previous release"
    ctx.audit("app.rollback", app=app, detail=f"deploy {record['id']}: back to {target}")
    return record


def make_key(ctx: Ctx, app: str) -> str:
    """The app's deploy key's public half, made now if there was none."""
    daemon = svc._daemon(ctx)
    key = svc._audited_call(
        ctx, "app.deploy.key", app, "public half shown", lambda: daemon.deploy_key(app, True)
    )
    if key is None:
        raise ActionFailed(502, "the daemon made no deploy key")
    return key


def output(ctx: Ctx, app: str, deploy_id: str) -> dict[str, Any]:
    """{"deploy": record, "output": str} of one deploy; NotFound for an unknown id."""
    return read_output(ctx.panel.daemon(svc._tenant(ctx)), app, deploy_id)


def read_output(daemon: TenantDaemon, app: str, deploy_id: str) -> dict[str, Any]:
    """`deploy_output`, with an id the daemon cannot have made a NotFound (as in a URL)."""
    if not DEPLOY_ID_RE.fullmatch(deploy_id):
        raise NotFound(f"no deploy {deploy_id[:60]!r}")
    try:
        return daemon.deploy_output(app, deploy_id)
    except Refused as exc:  # not the daemon's id format: no such deploy, as in a URL
        if exc.code is ErrorCode.INVALID_ARGUMENT:
            raise NotFound(f"no deploy {deploy_id[:60]!r}", ErrorCode.NOT_FOUND) from None
        raise
