"""`corral hub`: serve the monitoring hub; `create-admin NAME`, `create-bucket NAME
--owner USER` (prints the bucket's public id and secret once)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from corral.hub.config import DEFAULT_HOST, DEFAULT_PORT, HubConfig, default_home


def _host_pattern(text: str) -> str:
    """A Host header value, or `*.example.com` (TrustedHostMiddleware's only wildcard)."""
    host = text.strip().lower()
    wildcard = host.startswith("*.") and "*" not in host[2:]
    if not host or ("*" in host and not wildcard) or any(c in host for c in "/ @"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host name (a name, an address, or *.example.com)"
        )
    return host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral hub", description="The corral monitoring hub (SPEC 5)."
    )
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's absent option must not erase one given before it.
    common.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        help="the hub's folder (default $CORRAL_HUB_HOME or ~/.corral-hub)",
    )
    common.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (default: SQLite <home>/hub.db); postgresql://user:pw@host/db",
    )
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", metavar="URL", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action")
    serve = sub.add_parser("serve", parents=[common], help="serve the hub (the default)")
    for p in (parser, serve):
        p.add_argument("--host", default=DEFAULT_HOST, help=f"bind address ({DEFAULT_HOST})")
        p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
        p.add_argument("--cert", type=Path, help="TLS certificate chain (PEM)")
        p.add_argument("--key", type=Path, help="TLS private key (PEM)")
        p.add_argument("--public-origin", help="the origin users reach the hub at")
        p.add_argument(
            "--allowed-host",
            action="append",
            type=_host_pattern,
            metavar="HOST",
            help="a Host header accepted (repeatable; default: loopback names, the bind "
            "host and the public origin's host)",
        )
    admin = sub.add_parser("create-admin", parents=[common], help="add a hub administrator")
    admin.add_argument("username")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else prompt)"
    )
    bucket = sub.add_parser(
        "create-bucket", parents=[common], help="add a bucket; prints its public id and secret"
    )
    bucket.add_argument("name")
    bucket.add_argument("--owner", required=True, metavar="USER", help="the bucket's owner")
    return parser


def _config(ns: argparse.Namespace) -> HubConfig:
    home = ns.home.absolute() if ns.home else default_home()
    return HubConfig(
        home=home,
        database_url=ns.database_url or "",
        host=getattr(ns, "host", DEFAULT_HOST),
        port=getattr(ns, "port", DEFAULT_PORT),
        cert_file=getattr(ns, "cert", None),
        key_file=getattr(ns, "key", None),
        public_origin=getattr(ns, "public_origin", None),
        allowed_hosts=tuple(getattr(ns, "allowed_host", None) or ()),
    )


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    from corral.hub.accounts import AccountError
    from corral.hub.db.engine import DatabaseError
    from corral.hub.sealing import SealError
    from corral.hub.server import ServeError

    config = _config(ns)
    try:
        if ns.action == "create-admin":
            return _create_admin(config, ns.username, ns.password_stdin)
        if ns.action == "create-bucket":
            return _create_bucket(config, ns.name, ns.owner)
        return _serve(config)
    except (DatabaseError, ServeError, SealError, AccountError) as exc:
        sys.stderr.write(f"corral hub: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _read_password(from_stdin: bool, prompt: str) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != password:
        sys.stderr.write("corral hub: the passwords differ; nothing was changed\n")
        return None
    return password


def _create_admin(config: HubConfig, name: str, from_stdin: bool) -> int:
    from corral.hub.accounts import create_user
    from corral.hub.audit import record
    from corral.hub.db.engine import open_database

    password = _read_password(from_stdin, f"Password for {name}: ")
    if password is None:
        return 1
    database = open_database(config.url)
    try:
        with database.session() as db:
            create_user(db, name, password, is_admin=True)
            record(db, "cli", "user.create", detail=f"admin {name}")
    finally:
        database.close()
    print(f"created hub administrator {name!r}")
    return 0


def _create_bucket(config: HubConfig, name: str, owner: str) -> int:
    from corral.hub.accounts import AccountError, find_user
    from corral.hub.audit import record
    from corral.hub.buckets import create_bucket
    from corral.hub.db.engine import open_database
    from corral.hub.sealing import Sealer, load_or_create_key

    sealer = Sealer(load_or_create_key(config.key_path))
    database = open_database(config.url)
    try:
        with database.session() as db:
            user = find_user(db, owner)
            if user is None:
                raise AccountError(f"--owner: no user named {owner!r} (corral hub create-admin)")
            made = create_bucket(db, sealer, name, user, config.retention_days)
            record(db, "cli", "bucket.create", bucket=made.public_id, detail=f"owner {owner}")
    finally:
        database.close()
    print(
        f"created bucket {made.name!r}\n"
        f"  public id: {made.public_id}\n"
        f"  secret:    {made.secret}\n"
        "The secret is shown only this once and the hub does not keep it. On each server:\n"
        f"  corral link {made.public_id} <secret> --hub wss://<this hub>/agent/v1"
    )
    return 0


def _serve(config: HubConfig) -> int:
    from corral.hub.app import create_app
    from corral.hub.server import check_tls, serve

    check_tls(config)
    config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = create_app(config)
    scheme = "https" if config.tls else "http"
    print(f"corral hub: serving on {scheme}://{config.host}:{config.port}/", flush=True)
    serve(config, app)
    return 0
