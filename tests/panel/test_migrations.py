"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from corral.panel.db.engine import Database, make_engine, migrate
from corral.panel.db.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    database = Database.open(database_url)
    try:
        with database.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"models and migrations differ (add a migration): {diff}"
        tables = set(inspect(database.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        database.close()


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            first = MigrationContext.configure(connection).get_current_revision()
        migrate(engine)  # a restart of the panel: already at head
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == first
        assert first is not None
    finally:
        engine.dispose()
