"""`corral panel`: serve the panel; `corral panel create-admin NAME`: add a server admin.

First run: when the database has no user yet, `corral panel` creates `admin` with a
generated password and prints it once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from corral.panel.config import DEFAULT_HOST, DEFAULT_PORT, PanelConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral panel", description="The corral web control panel (SPEC 2)."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        type=Path,
        help="the panel's folder (default $CORRAL_PANEL_HOME or ~/.corral-panel)",
    )
    common.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL (default: SQLite in the home); postgresql://user:pw@host/db",
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
    admin = sub.add_parser("create-admin", parents=[common], help="add a server admin")
    admin.add_argument("username")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else prompt)"
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
    )


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    from corral.panel.db.engine import DatabaseError
    from corral.panel.server import ServeError

    config = _config(ns)
    try:
        if ns.action == "create-admin":
            return _create_admin(config, ns.username, ns.password_stdin)
        return _serve(config)
    except (DatabaseError, ServeError) as exc:
        sys.stderr.write(f"corral panel: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _create_admin(config: PanelConfig, name: str, from_stdin: bool) -> int:
    from corral.panel.db.engine import Database
    from corral.panel.users import create_user
    from corral.panel.validation import FieldError

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password for the new admin: ")
        if getpass.getpass("Again: ") != password:
            sys.stderr.write("corral panel: the passwords differ; nothing was changed\n")
            return 1
    database = Database.open(config.url)
    try:
        with database.session() as db:
            create_user(db, name, password, is_admin=True)
    except FieldError as exc:
        sys.stderr.write(f"corral panel: {exc.field}: {exc.message}\n")
        return 1
    finally:
        database.close()
    print(f"created admin {name.strip().lower()!r}")
    return 0


def first_run(database: object) -> str | None:
    """Create `admin` with a generated password when there is no user; return it."""
    from corral.panel.db.engine import Database
    from corral.panel.security.passwords import generate_password
    from corral.panel.users import create_user, user_count

    assert isinstance(database, Database)
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
    print(f"corral panel: serving on {config.scheme}://{config.host}:{config.port}/", flush=True)
    serve(config, create_app(config, database=database))
    return 0
