"""The hub's database: its own models and Alembic migrations."""
