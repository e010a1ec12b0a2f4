"""pixmill's Alembic migrations, shipped inside the package so an installed pixmill upgrades
its own database at start (`pixmill.core.db.migrate`); no `alembic.ini` is read.

Adding a table or column: change `pixmill/core/models.py`, then generate a revision against a
scratch database at head and review it (SQLite needs batch mode for most ALTERs; env.py turns
it on)::

    .venv/bin/python -c "
    from alembic import command
    from pixmill.core.db import alembic_config
    config = alembic_config()
    config.set_main_option('sqlalchemy.url', 'sqlite:////tmp/pixmill-dev.db')
    command.upgrade(config, 'head')
    command.revision(config, 'add files', autogenerate=True)"

tests/test_db.py checks that the models and the migrations agree on SQLite and PostgreSQL.
"""
