"""Engines, sessions and schema migrations for pixmill's metadata database.

SQLite (a file in the data dir) is the zero-configuration default; PostgreSQL is used when
`DATABASE_URL` points at one. The differences that matter are handled here once:

- SQLite gets WAL (readers never block the writer), foreign keys (off by default there), a
  busy timeout (concurrent writers wait instead of failing) and `BEGIN IMMEDIATE` for write
  transactions, so a read-then-write transaction takes the write lock up front instead of
  failing with "database is locked" when it tries to upgrade.
- PostgreSQL gets `pool_pre_ping` (a restarted server costs one retry, not an error).
- Pooled connections are never shared across `fork()` (RQ forks a work-horse per job).

`migrate()` brings any database to the newest Alembic revision from code, using the scripts
shipped in `pixmill/migrations`; no `alembic.ini` is read. It is idempotent and safe when
several processes start at once: PostgreSQL serializes them with an advisory lock, SQLite with
its database write lock, and the loser finds the schema already at head.

This module imports nothing from `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

if TYPE_CHECKING:
    from pixmill.core.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# How long a SQLite writer waits for another writer before giving up. Write transactions
# are short, so waiting this long means something is stuck rather than busy.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Key of the PostgreSQL advisory lock held while migrating (any constant unique to pixmill).
MIGRATION_LOCK_KEY = 7_370_864_150_289_771_878

# Connection execution option: begin the SQLite transaction with the write lock taken.
SQLITE_BEGIN_IMMEDIATE = "pixmill_sqlite_begin_immediate"

_MIGRATION_ATTEMPTS = 5

# Alembic installs its `op` and `context` proxies module-globally, so two threads of one
# process must not run migrations at the same time; other processes are handled by the
# database locks.
_migrate_lock = threading.Lock()


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; bare `postgres://`/`postgresql://` use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(engine_or_url: Engine | URL | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def create_engine_for(url: str | URL) -> Engine:
    """An engine configured for pixmill's use of `url` (SQLite or PostgreSQL)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    _forget_connections_after_fork(engine)
    return engine


def _sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {
        # Connections move between threads through the pool; each is used by one at a time.
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    }
    if in_memory:
        options["poolclass"] = StaticPool  # one shared connection, or every one is a new db
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite would otherwise issue its own deferred BEGIN; `_begin` below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _forget_connections_after_fork(engine: Engine) -> None:
    """A forked child must open its own connections, never reuse the parent's sockets."""

    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            # Detach without closing: closing would tear down the parent's session too.
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("connection belongs to another process")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are returned to callers)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config() -> AlembicConfig:
    """The Alembic configuration, built in code around the packaged migrations folder."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # New revision files start with a letter, so every one is an importable module name.
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to `revision`; a no-op when it is already there.

    The whole upgrade is one transaction holding the migration lock (advisory lock on
    PostgreSQL, the write lock on SQLite), so a second process starting at the same moment
    waits, then finds nothing left to do. Transient SQLite lock errors are retried.
    """
    with _migrate_lock:
        for attempt in range(1, _MIGRATION_ATTEMPTS + 1):
            try:
                _upgrade_once(engine, revision)
                return
            except exc.OperationalError as error:
                if not (is_sqlite(engine) and _is_sqlite_lock_error(error)):
                    raise
                if attempt == _MIGRATION_ATTEMPTS:
                    raise
                log.warning("database locked while migrating, retrying (%s)", error)
                time.sleep(0.2 * attempt)


def _upgrade_once(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.connect() as connection:
        connection.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Released with the transaction, even if this process dies mid-way.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def _is_sqlite_lock_error(error: exc.OperationalError) -> bool:
    message = str(error.orig).lower()
    return "locked" in message or "busy" in message


@dataclass(frozen=True)
class Database:
    """The engine and session factory of one pixmill database."""

    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def from_url(cls, url: str | URL, *, run_migrations: bool = True) -> Database:
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (
            None,
            "",
            ":memory:",
        ):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine_for(parsed)
        if run_migrations:
            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine=engine, sessions=session_factory(engine))

    @classmethod
    def from_config(cls, config: Config, *, run_migrations: bool = True) -> Database:
        """The database `config` names (default: `pixmill.db` in the data dir), migrated."""
        return cls.from_url(config.sqlalchemy_url, run_migrations=run_migrations)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
