"""Alembic revision scripts, applied in order by `pixmill.core.db.migrate`."""
