"""A throw-away PostgreSQL server for a test session, and a fresh database for each test.

The server lives in a private temporary folder: its data directory, its log and its only
unix socket are there, it listens on 127.0.0.1 alone, and it takes password logins only.
Durability is switched off (fsync, full-page writes): nothing here outlives the session.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` system user that Debian's package creates. It is a direct child of the test
process (never daemonized by pg_ctl), so it can always be stopped and reaped, and a pid it
had is never signalled after it has gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

INSTALL_HINT = (
    "the PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found in PATH nor in "
    "/usr/lib/postgresql/*/bin; install them with `scripts/setup --dev` (Debian package "
    "`postgresql`)"
)
HOST = "127.0.0.1"
USER = "corral"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

# Speed over durability, and nothing reachable from outside this machine or this folder.
SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_permissions": "0700",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "32MB",
}
HBA = """\
# Written by tests/support/postgres.py: password logins over loopback and the private socket.
local all all               scram-sha-256
host  all all 127.0.0.1/32  scram-sha-256
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run here; the message says what to install or fix."""


@dataclass(frozen=True)
class Binaries:
    initdb: Path
    postgres: Path
    pg_ctl: Path


def find_binaries() -> Binaries:
    """initdb, postgres and pg_ctl from one installation: PATH first, then the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them out of PATH)."""
    folders: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        folders.append(Path(on_path).resolve().parent)

    def version(folder: Path) -> int:
        name = folder.parent.name
        return int(name) if name.isdigit() else -1

    folders.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True))
    for folder in folders:
        names = ("initdb", "postgres", "pg_ctl")
        if all(os.access(folder / name, os.X_OK) for name in names):
            return Binaries(*(folder / name for name in names))
    raise PostgresUnavailable(INSTALL_HINT)


@dataclass(frozen=True)
class RunAs:
    """Who the server runs as: the current user, or `postgres` when we are root."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_server(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "the tests run as root, PostgreSQL refuses to, and there is no `postgres` "
                "system user to run it as; " + INSTALL_HINT
            ) from None
        return cls(entry.pw_uid, entry.pw_gid)

    @property
    def extra_groups(self) -> list[int] | None:
        """No supplementary groups for the server (None: keep ours, we are not root)."""
        return None if self.uid is None else []

    def give(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


# Looked up here, not in the forked child: dlopen after fork is not safe.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the server's child process before exec: if the test process is killed
    outright (no finalizer runs), the kernel sends the postmaster SIGINT, PostgreSQL's
    fast shutdown. Python runs this after the uid change, which would clear it."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _private_folder(run_as: RunAs) -> Path:
    """A fresh folder the server's user owns. Under /tmp when the usual temp dir has a
    parent the server's user could not enter (a private TMPDIR of root's)."""
    parent = Path(tempfile.gettempdir())
    if run_as.uid is not None and any(p.stat().st_mode & 0o001 == 0 for p in parent.parents):
        parent = Path("/tmp")
    folder = Path(tempfile.mkdtemp(prefix="crl-pg-", dir=parent))
    run_as.give(folder)
    return folder


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class PostgresServer:
    """A running server; `create_database` hands out fresh, empty databases on it."""

    root: Path
    port: int
    password: str
    binaries: Binaries
    run_as: RunAs
    process: subprocess.Popen[bytes]
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of a database on this server."""
        password = quote(self.password, safe="")
        return f"postgresql+psycopg://{USER}:{password}@{HOST}:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=USER,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, hint: str = "") -> str:
        """CREATE DATABASE with a new name (readable: `hint` is usually the test name)."""
        slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")
        name = f"t{next(self._names):04d}_{slug}"[:63].rstrip("_")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, closing any connection a test left open (a leaked engine pool)."""
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """pg_ctl stop -m fast; SIGKILL to the server's process group if that was not enough.

        The postmaster is our child and is reaped only by the final wait(), so its pid and
        process group cannot have been reused by then."""
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                wait = str(int(STOP_TIMEOUT))
                pg_ctl, data = str(self.binaries.pg_ctl), str(self.data)
                subprocess.run(
                    [pg_ctl, "stop", "-D", data, "-m", "fast", "-w", "-t", wait],
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=STOP_TIMEOUT + 5,
                    user=self.run_as.uid,
                    group=self.run_as.gid,
                    extra_groups=self.run_as.extra_groups,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def _initdb(binaries: Binaries, run_as: RunAs, root: Path, password: str) -> None:
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    run_as.give(pwfile)
    try:
        result = subprocess.run(
            [
                str(binaries.initdb),
                *("-D", str(root / "data"), "-U", USER, f"--pwfile={pwfile}"),
                *("--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"),
                *("--no-sync", "--no-instructions"),
            ],
            cwd=root,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=run_as.extra_groups,
        )
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    (root / "data" / "pg_hba.conf").write_text(HBA)


def _environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "TZ": "UTC"}


def _launch(server_args: list[str], run_as: RunAs, root: Path) -> subprocess.Popen[bytes]:
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    with (root / "postgres.log").open("ab") as log:
        return subprocess.Popen(
            server_args,
            cwd=root,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=preexec,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=run_as.extra_groups,
        )


def _wait_ready(server: PostgresServer) -> bool:
    """True once a password login works; False if the server exited first."""
    deadline = time.monotonic() + START_TIMEOUT
    while server.process.poll() is None:
        try:
            with server.admin():
                return True
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s; "
                    f"log {server.log}:\n{_tail(server.log)}"
                ) from None
            time.sleep(0.05)
    return False


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a fresh server, yield it, and always stop it and remove its folder."""
    binaries = find_binaries()
    run_as = RunAs.for_server()
    root = _private_folder(run_as)
    server: PostgresServer | None = None
    try:
        password = secrets.token_urlsafe(18)
        _initdb(binaries, run_as, root, password)
        # A free port can be taken by someone else before the server binds it: try again.
        for _attempt in range(5):
            port = _free_port()
            settings = {**SETTINGS, "port": str(port), "unix_socket_directories": str(root)}
            args = [str(binaries.postgres), "-D", str(root / "data")]
            args += [f"-c{key}={value}" for key, value in settings.items()]
            server = PostgresServer(
                root, port, password, binaries, run_as, _launch(args, run_as, root)
            )
            if _wait_ready(server):
                break
            server.stop()
            if "already in use" not in _tail(server.log, 5):
                raise PostgresUnavailable(
                    f"PostgreSQL exited at start (exit {server.process.returncode}); "
                    f"log {server.log}:\n{_tail(server.log)}"
                )
            server = None
        if server is None:
            raise PostgresUnavailable("PostgreSQL found no free port on 127.0.0.1 in 5 tries")
        yield server
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(server: PostgresServer, hint: str = "") -> Iterator[str]:
    """A new empty database on `server`; yields its SQLAlchemy URL, drops it afterwards."""
    name = server.create_database(hint)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
