"""Opening the database and bringing its schema up to date with Alembic.

Routes run in Starlette's threadpool and use plain (sync) SQLAlchemy sessions; nothing
here runs on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(Exception):
    """The database URL is wrong or the server cannot be reached (a message for the user)."""


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"not a database URL: {url!r} (sqlite:///path or postgresql://...)"
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["pool_pre_ping"] = True
    else:
        raise DatabaseError(f"unsupported database {backend!r}: use sqlite or postgresql")
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE for grants and samples
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the sampler's writes
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config(engine: Engine, migrations: Path = MIGRATIONS) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, migrations: Path = MIGRATIONS) -> None:
    """Upgrade the schema to the newest migration (a fresh database gets every table).
    `migrations`: another Alembic folder (the hub's)."""
    from alembic import command

    try:
        command.upgrade(alembic_config(engine, migrations), "head")
    except Exception as exc:  # a connection error surfaces here first
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
            raise DatabaseError(f"cannot open the database: {exc}".splitlines()[0]) from exc
        raise


class Database:
    """The engine and its session factory; `session()` is a unit of work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, migrations: Path = MIGRATIONS) -> Database:
        engine = make_engine(url)
        migrate(engine, migrations)
        return cls(engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Commit on success, roll back on any error: nothing is ever half-saved."""
        with self._factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()
