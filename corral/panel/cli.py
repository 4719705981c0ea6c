"""`corral panel`: serve the panel; `corral panel create-admin NAME`: add a server admin.

First run: when the database has no user yet, `corral panel` creates `admin` with a
generated password and prints it once.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from corral.panel.config import DEFAULT_HOST, DEFAULT_PORT, PanelConfig

if TYPE_CHECKING:
    from corral.panel.db.engine import Database


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral panel", description="The corral web control panel (SPEC 2)."
    )
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's absent --home must not erase one given before the subcommand
    # (`corral panel --home X create-admin ...`).
    common.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        help="the panel's folder (default $CORRAL_PANEL_HOME or ~/.corral-panel)",
    )
    common.add_argument(
        "--db",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (default: SQLite in the home); postgresql://user:pw@host/db",
    )
    common.add_argument(
        "--helper-socket",
        metavar="PATH",
        type=Path,
        default=argparse.SUPPRESS,
        help="isolated mode: the socket of `corral helper`, which runs each tenant as its own "
        "system user (default $CORRAL_PANEL_HELPER_SOCKET; unset: development mode)",
    )
    sub = parser.add_subparsers(dest="action")
    serve = sub.add_parser("serve", parents=[common], help="serve the panel (the default)")
    for p in (parser, serve):
        p.add_argument(
            "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
        )
        p.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
        )
        p.add_argument("--cert", type=Path, help="TLS certificate chain (PEM)")
        p.add_argument("--key", type=Path, help="TLS private key (PEM)")
        p.add_argument(
            "--public-origin",
            help="the origin users reach the panel at, e.g. https://panel.example.com",
        )
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--helper-socket", metavar="PATH", type=Path, help=argparse.SUPPRESS)
    admin = sub.add_parser("create-admin", parents=[common], help="add a server admin")
    admin.add_argument("username")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else prompt)"
    )
    setpw = sub.add_parser(
        "set-password", parents=[common], help="set a user's password (ends their sessions)"
    )
    setpw.add_argument("username")
    setpw.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else prompt)"
    )
    tenant = sub.add_parser(
        "add-tenant", parents=[common], help="add a tenant (development mode: a home directory)"
    )
    tenant.add_argument("name")
    tenant.add_argument(
        "--dir",
        dest="tenant_home",
        metavar="PATH",
        help="an existing directory (default: a new one under the panel's tenants folder; "
        "never in isolated mode: the helper makes the home)",
    )
    tenant.add_argument("--app-limit", type=int, default=-1, help="-1 unlimited (default), 0 none")
    tenant.add_argument(
        "--exist-ok", action="store_true", help="succeed quietly when the tenant already exists"
    )
    return parser


def _config(ns: argparse.Namespace) -> PanelConfig:
    return PanelConfig.from_env(
        home=ns.home.absolute() if ns.home else None,
        database_url=ns.db,
        host=getattr(ns, "host", None),
        port=getattr(ns, "port", None),
        cert_file=getattr(ns, "cert", None),
        key_file=getattr(ns, "key", None),
        public_origin=getattr(ns, "public_origin", None),
        helper_socket=ns.helper_socket.absolute() if ns.helper_socket else None,
    )


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    from corral.panel.db.engine import DatabaseError
    from corral.panel.server import ServeError

    config = _config(ns)
    if config.isolated and os.geteuid() == 0:
        sys.stderr.write(
            "corral panel: in isolated mode (--helper-socket) the panel must not run as root: "
            "run it as its own user (the helper alone runs as root)\n"
        )
        return 2
    try:
        if ns.action == "create-admin":
            return _create_admin(config, ns.username, ns.password_stdin)
        if ns.action == "set-password":
            return _set_password(config, ns.username, ns.password_stdin)
        if ns.action == "add-tenant":
            return _add_tenant(config, ns)
        return _serve(config)
    except (DatabaseError, ServeError) as exc:
        sys.stderr.write(f"corral panel: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _read_password(from_stdin: bool, prompt: str) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != password:
        sys.stderr.write("corral panel: the passwords differ; nothing was changed\n")
        return None
    return password


def _create_admin(config: PanelConfig, name: str, from_stdin: bool) -> int:
    from corral.panel.db.engine import Database
    from corral.panel.users import create_user
    from corral.panel.validation import FieldError

    password = _read_password(from_stdin, "Password for the new admin: ")
    if password is None:
        return 1
    database = Database.open(config.url)
    try:
        with database.session() as db:
            create_user(db, name, password, is_admin=True)
        _audit(database, "user.create", f"admin {name.strip().lower()!r} (command line)")
    except FieldError as exc:
        sys.stderr.write(f"corral panel: {exc.field}: {exc.message}\n")
        return 1
    finally:
        database.close()
    print(f"created admin {name.strip().lower()!r}")
    return 0


def _set_password(config: PanelConfig, name: str, from_stdin: bool) -> int:
    import time

    from sqlalchemy import delete

    from corral.panel.db.engine import Database
    from corral.panel.db.models import Session
    from corral.panel.security.passwords import hash_password, password_problem
    from corral.panel.users import find_user

    password = _read_password(from_stdin, f"New password for {name}: ")
    if password is None:
        return 1
    problem = password_problem(password)
    if problem:
        sys.stderr.write(f"corral panel: password: {problem}\n")
        return 1
    database = Database.open(config.url)
    try:
        with database.session() as db:
            user = find_user(db, name)
            if user is None:
                sys.stderr.write(f"corral panel: no user named {name!r}\n")
                return 1
            user.password_hash = hash_password(password)
            user.password_changed_at = time.time()
            db.execute(delete(Session).where(Session.user_id == user.id))
        _audit(database, "user.password", f"{name.strip().lower()!r} (command line)")
    finally:
        database.close()
    print(f"password of {name.strip().lower()!r} changed; their sessions were ended")
    return 0


def _add_tenant(config: PanelConfig, ns: argparse.Namespace) -> int:
    from corral.panel.db.engine import Database
    from corral.panel.tenants_service import TenantError, create_tenant
    from corral.panel.validation import FieldErrors

    database = Database.open(config.url)
    try:
        if ns.exist_ok:
            from corral.panel.db.models import Tenant

            with database.session() as db:
                if db.query(Tenant).filter_by(name=ns.name).first() is not None:
                    return 0
        ref = create_tenant(database, config, ns.name, ns.tenant_home or "", ns.app_limit)
        user = f", system user {ref.system_user}" if ref.system_user else ""
        _audit(
            database,
            "tenant.create",
            f"{ref.name!r} home {ref.home}{user} (command line)",
            ref.name,
        )
    except FieldErrors as exc:
        for field, message in exc.errors.items():
            shown = "--dir" if field == "home" else field
            sys.stderr.write(f"corral panel: {shown}: {message}\n")
        return 1
    except TenantError as exc:
        _audit(database, "tenant.create", f"{ns.name!r} (command line): {exc}", result="failed")
        sys.stderr.write(f"corral panel: the tenant was not created: {exc}\n")
        return 1
    finally:
        database.close()
    user = f" as the system user {ref.system_user}" if ref.system_user else ""
    print(f"created tenant {ref.name!r} with home {ref.home}{user}")
    return 0


def _audit(
    database: Database,
    action: str,
    detail: str,
    tenant: str | None = None,
    *,
    result: str = "ok",
) -> None:
    """Command-line admin actions are audited like the panel's (actor: the OS user)."""
    import pwd

    from corral.panel.audit import AuditLog

    try:
        who = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        who = str(os.getuid())
    AuditLog(database).record(
        actor=f"cli:{who}",
        action=action,
        result=result,
        address="local",
        tenant=tenant,
        detail=detail,
    )


def first_run(database: Database) -> str | None:
    """Create `admin` with a generated password when there is no user; return it."""
    from corral.panel.security.passwords import generate_password
    from corral.panel.users import create_user, user_count

    with database.session() as db:
        if user_count(db):
            return None
        password = generate_password()
        create_user(db, "admin", password, is_admin=True)
        return password


def _serve(config: PanelConfig) -> int:
    from corral.panel.app import create_app
    from corral.panel.db.engine import Database
    from corral.panel.server import check_tls, serve

    check_tls(config)
    config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = Database.open(config.url)
    password = first_run(database)
    if password:
        print(
            "corral panel: first run: created the server admin 'admin' with the password\n\n"
            f"    {password}\n\n"
            "It is shown only this once: log in and change it (Account page).",
            flush=True,
        )
    print(f"corral panel: {_mode_line(config)}", flush=True)
    print(f"corral panel: serving on {config.scheme}://{config.host}:{config.port}/", flush=True)
    serve(config, create_app(config, database=database))
    return 0


def _mode_line(config: PanelConfig) -> str:
    """How tenants are kept apart, in one line (a helper that does not answer yet is said,
    not fatal: it may start after the panel)."""
    if config.helper_socket is None:
        return (
            "development mode: every tenant runs under this user, tenants are NOT isolated "
            "(--helper-socket for isolated mode)"
        )
    from corral.panel.helper_client import HelperClient, HelperError

    try:
        info = HelperClient(config.helper_socket, timeout=5.0).ping()
    except HelperError as exc:
        return f"isolated mode; warning: {exc.message}"
    return f"isolated mode: corral helper {info['version']} at {config.helper_socket}"
