"""The panel's storage: SQLAlchemy models, the engine, Alembic migrations."""
