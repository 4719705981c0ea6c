"""Alembic's environment: migrations run on the engine the hub hands over."""

from __future__ import annotations

from alembic import context

from corral.hub.db.engine import VERSION_TABLE
from corral.hub.db.models import Base

target_metadata = Base.metadata


def run() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
