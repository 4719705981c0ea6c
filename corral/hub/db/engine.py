"""Opening the hub's database: the panel's engine, unit of work and migration runner, with
the hub's own migrations (kept in their own version table, so a hub and a panel may even
share a PostgreSQL database without their Alembic histories meeting)."""

from __future__ import annotations

from pathlib import Path

from corral.panel.db.engine import Database, DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "hub_alembic_version"

__all__ = ["Database", "DatabaseError", "open_database"]


def open_database(url: str) -> Database:
    return Database.open(url, MIGRATIONS)
