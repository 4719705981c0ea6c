"""Alembic's environment: migrations run on the engine the panel hands over."""

from __future__ import annotations

from alembic import context

from corral.panel.db.models import Base

target_metadata = Base.metadata


def run() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:  # `alembic` on the command line: sqlalchemy.url from the ini
        from sqlalchemy import create_engine

        engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite cannot ALTER most things: batch mode rebuilds
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
