"""Creating and removing tenants (SPEC 2.2), and changing their app limits.

Development mode: every tenant's daemon runs under the panel's own uid, so a tenant is a
name, a home directory and an app limit. A new tenant's home is made under
`config.tenants_dir` (mode 0750), or an admin names an existing directory. Homes never
overlap each other or the panel's own folder: a tenant's apps may read anything under
their home, and the panel's database must not be there.

Isolated mode (`config.helper_socket`): a tenant is a system user of its own. The
privileged helper creates the user and its home (the admin never chooses the home) and
removes them; the panel stores the home and user it was given. A helper failure is a
`HelperFailed` with one line for the admin; nothing is half-made (a row that cannot be
saved has its user removed again).

Removing a tenant stops its daemon (and so its apps), deletes its row (grants and metric
samples go with it, ON DELETE CASCADE) and keeps its files unless asked to delete them,
which is only done for homes the panel (or its helper) made.

A changed app limit is stored, then pushed to the tenant's daemon if it runs
(`set_app_limit`), which enforces it too; a daemon that does not run gets it at its next
start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from corral.homedir import SUN_PATH_MAX
from corral.panel.db.models import Tenant
from corral.panel.gateway import (
    DaemonDown,
    GatewayError,
    NoAutostart,
    TenantDaemon,
)
from corral.panel.helper_client import HelperClient, HelperError
from corral.panel.services import TenantRef
from corral.panel.validation import FieldError, FieldErrors, app_limit, tenant_name
from corral.paths import Home
from corral.protocol.wire import ErrorCode

if TYPE_CHECKING:
    from corral.panel.config import PanelConfig
    from corral.panel.db.engine import Database
    from corral.panel.services import Panel

HOME_MODE = 0o750
STATUS_TIMEOUT = 3.0
"""A daemon that does not answer a status check within this is shown as not answering."""
STOP_WAIT = 30.0
"""How long to wait for a killed daemon to go away before deleting the files under it."""
STATUS_WORKERS = 8


class TenantError(Exception):
    """An action on a tenant could not be done; the message is for the admin."""


class HelperFailed(TenantError):
    """The privileged helper could not do its part (unreachable, or it refused)."""


def helper_of(config: PanelConfig) -> HelperClient:
    if config.helper_socket is None:
        raise RuntimeError("the helper is only used in isolated mode")
    return HelperClient(config.helper_socket)


ISOLATED_HOME = (
    "in isolated mode the helper makes each tenant's home (a new system user's, under its "
    "tenants folder): leave the home empty"
)


# --- creating


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_home(text: str, config: PanelConfig, field: str = "home") -> Path:
    """An existing directory an admin names as a tenant's home, resolved."""
    if "\x00" in text or "\n" in text:
        raise FieldError(field, "must be one line of text")
    path = Path(text.strip())
    if not path.is_absolute():
        raise FieldError(field, f"give an absolute path (starting with /), not {text.strip()!r}")
    real = _real(path)
    if not real.is_dir():
        raise FieldError(field, f"{text.strip()} is not an existing directory")
    if real == Path("/"):
        raise FieldError(field, "the root directory cannot be a tenant's home")
    panel_home = _real(config.home)
    if _inside(panel_home, real):
        raise FieldError(field, "this directory holds the panel's own files (its database)")
    if _inside(real, panel_home) and not _inside(real, _real(config.tenants_dir)):
        raise FieldError(
            field, f"only {config.tenants_dir} may hold homes inside the panel's folder"
        )
    _check_socket_length(real, field)
    return real


def _check_socket_length(home: Path, field: str) -> None:
    socket = Home(home / ".corral").socket
    if len(os.fsencode(socket)) > SUN_PATH_MAX:
        raise FieldError(
            field,
            f"the path is too long: the daemon's socket {socket} would exceed the "
            f"{SUN_PATH_MAX} bytes unix sockets allow",
        )


def _overlap(db_homes: list[tuple[str, str]], home: Path) -> str | None:
    """The name of a tenant whose home is, contains or lies inside `home`."""
    for name, other in db_homes:
        real = _real(Path(other))
        if _inside(home, real) or _inside(real, home):
            return name
    return None


def _make_home(path: Path, field: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
        path.mkdir(mode=HOME_MODE)
        os.chmod(path, HOME_MODE)  # whatever the umask
    except FileExistsError:
        raise FieldError(
            field, f"{path} already exists: enter it as the home to make it this tenant's"
        ) from None
    except OSError as exc:
        raise FieldError(field, f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def create_tenant(
    database: Database,
    config: PanelConfig,
    name: object,
    home: object = "",
    limit: object = -1,
    *,
    helper: HelperClient | None = None,
) -> TenantRef:
    """Validate and add a tenant (one transaction); FieldErrors names every bad field.

    Development mode: an empty `home` makes `<tenants_dir>/<name>`; the directory is
    removed again if the row cannot be saved. Isolated mode: `home` must be empty; the
    helper (`helper`, default the config's) creates the system user and its home; a
    helper failure raises HelperFailed (or FieldErrors for a name it refuses).
    """
    errors: dict[str, str] = {}
    clean_name = clean_limit = None
    given: Path | None = None
    try:
        clean_name = tenant_name(name, "name")
    except FieldError as exc:
        errors[exc.field] = exc.message
    try:
        clean_limit = app_limit(limit, "app_limit")
    except FieldError as exc:
        errors[exc.field] = exc.message
    home_text = home if isinstance(home, str) else ""
    if home is not None and not isinstance(home, str):
        errors["home"] = "must be a path (text)"
    elif home_text.strip() and config.isolated:
        errors["home"] = ISOLATED_HOME
    elif home_text.strip():
        try:
            given = check_home(home_text, config)
        except FieldError as exc:
            errors[exc.field] = exc.message
    if errors:
        raise FieldErrors(errors)
    assert clean_name is not None and clean_limit is not None
    if config.isolated:
        return _create_isolated(database, helper or helper_of(config), clean_name, clean_limit)
    made: Path | None = None
    try:
        with database.session() as db:
            if db.scalar(select(Tenant).where(Tenant.name == clean_name)) is not None:
                raise FieldErrors({"name": f"a tenant named {clean_name!r} already exists"})
            homes = [(row.name, row.home) for row in db.scalars(select(Tenant))]
            target = given if given is not None else config.tenants_dir / clean_name
            if given is None:
                _check_socket_length(target, "name")
            other = _overlap(homes, _real(target))
            if other is not None:
                raise FieldErrors({"home": f"this overlaps the home of tenant {other!r}"})
            if given is None:
                try:
                    made = _make_home(target, "home")
                except FieldError as exc:
                    raise FieldErrors({exc.field: exc.message}) from None
                target = _real(target)
            row = Tenant(
                name=clean_name, home=str(target), app_limit=clean_limit, created_at=time.time()
            )
            db.add(row)
            db.flush()
            ref = TenantRef.of(row)
    except BaseException as exc:
        if made is not None:
            with contextlib.suppress(OSError):
                made.rmdir()  # ours, just made, still empty
        if isinstance(exc, IntegrityError):  # a concurrent create of the same name
            raise FieldErrors({"name": f"a tenant named {clean_name!r} already exists"}) from None
        raise
    return ref


def _create_isolated(database: Database, helper: HelperClient, name: str, limit: int) -> TenantRef:
    """The helper makes the user and home; the row stores them. A row that cannot be saved
    (a concurrent create, a database error) has the user removed again."""
    with database.session() as db:
        if db.scalar(select(Tenant).where(Tenant.name == name)) is not None:
            raise FieldErrors({"name": f"a tenant named {name!r} already exists"})
        homes = [(row.name, row.home) for row in db.scalars(select(Tenant))]
    try:
        info = helper.create_tenant(name)
    except HelperError as exc:
        if exc.code in (ErrorCode.CONFLICT, ErrorCode.INVALID_ARGUMENT):
            raise FieldErrors({"name": exc.message}) from None
        raise HelperFailed(exc.message) from None
    try:
        home = Path(info["home"])
        other = _overlap(homes, _real(home))
        if other is not None:
            raise HelperFailed(
                f"the helper made the home {home}, which overlaps the home of tenant {other!r}"
            )
        with database.session() as db:
            row = Tenant(
                name=name,
                home=str(home),
                app_limit=limit,
                system_user=info["user"],
                created_at=time.time(),
            )
            db.add(row)
            db.flush()
            return TenantRef.of(row)
    except BaseException as exc:
        with contextlib.suppress(HelperError):
            helper.remove_tenant(name, delete_home=True)  # just made, holds nothing yet
        if isinstance(exc, IntegrityError):
            raise FieldErrors({"name": f"a tenant named {name!r} already exists"}) from None
        raise


def set_app_limit(database: Database, tenant_id: int, limit: object) -> tuple[int, int]:
    """Change a tenant's app limit; (old, new). Apps over a lowered limit keep running:
    the limit applies to creating apps."""
    try:
        new = app_limit(limit, "app_limit")
    except FieldError as exc:
        raise FieldErrors({exc.field: exc.message}) from None
    with database.session() as db:
        row = db.get(Tenant, tenant_id)
        if row is None:
            raise TenantError("no such tenant")
        old, row.app_limit = row.app_limit, new
    return old, new


def push_app_limit(tenant: TenantRef, limit: int) -> str:
    """Tell the tenant's running daemon its new app limit (it enforces the limit too);
    what happened, in words. Raises TenantError when a running daemon did not take it
    (the stored limit stands: the daemon gets it at its next start)."""
    try:
        quiet_daemon(tenant).call("set_app_limit", limit=limit)
    except DaemonDown:
        return "the daemon is not running: it gets the limit when it starts"
    except GatewayError as exc:
        raise TenantError(
            f"the running daemon did not take the new limit ({exc.message}); "
            "it gets it at its next start"
        ) from None
    return "the running daemon applies it now"


# --- the daemon's state


@dataclass(frozen=True)
class DaemonState:
    up: bool
    apps: int | None
    """How many apps the daemon runs; None when it did not answer."""
    message: str = ""


def quiet_daemon(tenant: TenantRef, timeout: float = STATUS_TIMEOUT) -> TenantDaemon:
    """The tenant's daemon, never started by this: a status check must not wake it."""
    return TenantDaemon(tenant.home, NoAutostart(), timeout=timeout)


def daemon_state(tenant: TenantRef) -> DaemonState:
    try:
        processes = quiet_daemon(tenant).processes()
    except DaemonDown as exc:
        return DaemonState(False, None, str(exc))
    except GatewayError as exc:
        return DaemonState(True, None, str(exc))
    return DaemonState(True, len({str(p.get("name")) for p in processes}))


def daemon_states(tenants: list[TenantRef]) -> dict[int, DaemonState]:
    """Every tenant's daemon state, asked in parallel (one slow daemon does not add up)."""
    if not tenants:
        return {}
    workers = min(STATUS_WORKERS, len(tenants))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="corral-status") as ex:
        return dict(zip((t.id for t in tenants), ex.map(daemon_state, tenants), strict=True))


# --- removing


@dataclass(frozen=True)
class Removed:
    name: str
    home: Path
    daemon_was_running: bool
    files_deleted: bool
    note: str = ""
    """Why files asked to be deleted were kept, if they were."""


def _stop_daemon(tenant: TenantRef) -> bool:
    """Ask the daemon to stop its apps and exit; False when none was running."""
    try:
        quiet_daemon(tenant, timeout=STOP_WAIT).call("kill")
    except DaemonDown:
        return False
    except GatewayError as exc:
        raise TenantError(f"the tenant's daemon refused to stop: {exc}") from None
    return True


def _wait_gone(tenant: TenantRef, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    daemon = quiet_daemon(tenant, timeout=1.0)
    while time.monotonic() < deadline:
        try:
            daemon.ping()
        except DaemonDown:
            return True
        except GatewayError:
            pass
        time.sleep(0.1)
    return False


def _reap(panel: Panel) -> None:
    """A daemon the dev starter spawned is the panel's child: collect its exit status."""
    reap = getattr(panel.starter, "reap", None)
    if callable(reap):
        reap()


def panel_made(config: PanelConfig, tenant: TenantRef) -> bool:
    """Whether the panel made this tenant's home (so it may delete it): the helper's, for
    a tenant with its own system user; else a folder of tenants_dir."""
    if tenant.system_user is not None:
        return config.isolated
    return _real(tenant.home).parent == _real(config.tenants_dir)


def remove_tenant(panel: Panel, tenant_id: int, *, delete_files: bool = False) -> Removed:
    """Stop the tenant's daemon (waiting until it is gone), then delete the tenant
    (grants and samples cascade).

    If the daemon cannot be stopped, nothing is removed. Files are deleted only when
    asked and only for a home the panel made under its tenants folder. A tenant with its
    own system user is removed by the helper (isolated mode).
    """
    with panel.database.session() as db:
        row = db.get(Tenant, tenant_id)
        if row is None:
            raise TenantError("no such tenant")
        tenant = TenantRef.of(row)
    if tenant.system_user is not None:
        return _remove_isolated(panel, tenant, delete_files)
    if delete_files and not panel_made(panel.config, tenant):
        raise TenantError(
            f"the home {tenant.home} was not made by the panel; it is not deleted from here "
            "(remove the tenant and keep its files, then delete them yourself)"
        )
    was_running = _stop_daemon(tenant)
    if was_running and not _wait_gone(tenant, STOP_WAIT):
        raise TenantError(
            f"the tenant's daemon was still stopping its apps after {STOP_WAIT:g} s; "
            "nothing was removed, try again in a moment"
        )
    with panel.database.session() as db:
        row = db.get(Tenant, tenant_id)
        if row is not None:
            db.delete(row)
    panel.auth.invalidate_all()  # grants went with it
    _reap(panel)
    # A request that resolved the tenant before the delete may have started the daemon
    # again in between; stop that one too (never starting one).
    was_running = _stop_daemon(tenant) or was_running
    if not delete_files:
        return Removed(tenant.name, tenant.home, was_running, False)
    if not _wait_gone(tenant, STOP_WAIT):
        return Removed(
            tenant.name,
            tenant.home,
            was_running,
            False,
            f"the daemon was still stopping after {STOP_WAIT:g} s, so {tenant.home} was kept",
        )
    try:
        shutil.rmtree(tenant.home)
    except OSError as exc:
        return Removed(
            tenant.name,
            tenant.home,
            was_running,
            False,
            f"could not delete {tenant.home}: {exc.strerror or exc}",
        )
    return Removed(tenant.name, tenant.home, was_running, True)


def _remove_isolated(panel: Panel, tenant: TenantRef, delete_files: bool) -> Removed:
    """The helper stops the daemon, kills what is left of the tenant's processes, deletes
    the home if asked, then the user; only then the row goes. A helper failure removes
    nothing here (the admin can try again)."""
    if not panel.config.isolated or panel.helper is None:
        raise TenantError(
            f"the tenant runs as the system user {tenant.system_user!r}: only a panel in "
            "isolated mode (with the helper) can remove it"
        )
    was_running = daemon_state(tenant).up
    note = ""
    try:
        result = panel.helper.remove_tenant(tenant.name, delete_home=delete_files)
        home_deleted = result["home_deleted"]
    except HelperError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:
            raise HelperFailed(exc.message) from None
        home_deleted = False  # removed before (a run that failed after the helper's part)
        note = f"the helper no longer knew the tenant ({exc.message})"
    with panel.database.session() as db:
        row = db.get(Tenant, tenant.id)
        if row is not None:
            db.delete(row)
    panel.auth.invalidate_all()  # grants went with it
    if delete_files and not home_deleted and not note:
        note = f"the helper kept {tenant.home}"
    return Removed(tenant.name, tenant.home, was_running, home_deleted, note)
