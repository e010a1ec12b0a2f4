"""Alembic environment: runs the revisions on the connection `pixmill.core.db.migrate` hands
over in `config.attributes["connection"]`, inside the caller's transaction and lock.

Without a connection (a developer running the `alembic` command with `-x url=...` or a
`sqlalchemy.url` option, e.g. for `alembic revision --autogenerate`), it opens its own engine.
Imports only `pixmill.core`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pixmill.core.db import create_engine_for
from pixmill.core.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database: pass -x url=<sqlalchemy url> or use pixmill's migrate()")
    engine = create_engine_for(url)
    try:
        with engine.begin() as own_connection:
            _run(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("pixmill migrations run online only (pixmill.core.db.migrate)")
_run_online()
