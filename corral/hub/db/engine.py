"""Opening the hub's database: the panel's engine and unit of work, the hub's migrations
(kept in their own version table, so a hub and a panel may even share a PostgreSQL
database without their Alembic histories meeting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from corral.panel.db.engine import Database, DatabaseError, make_engine

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "hub_alembic_version"

__all__ = ["Database", "DatabaseError", "migrate", "open_database"]


def _config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    from alembic import command

    try:
        command.upgrade(_config(engine), "head")
    except Exception as exc:  # a connection error surfaces here first
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
            raise DatabaseError(f"cannot open the database: {exc}".splitlines()[0]) from exc
        raise


def open_database(url: str) -> Database:
    engine = make_engine(url)
    migrate(engine)
    return Database(engine)
