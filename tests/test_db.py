"""The metadata database on both backends: engines, migrations, types and constraints.

Every database test runs against SQLite (a temporary file) and PostgreSQL (a throwaway
database on 127.0.0.1:5432 created for the test module and dropped after it). PostgreSQL
being unreachable fails those tests, unless PIXMILL_TEST_SKIP_POSTGRES=1 says to skip them.

The fixtures here are also imported by tests/test_jobstore.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError

from pixmill.core.config import Config
from pixmill.core.db import (
    MIGRATION_LOCK_KEY,
    SQLITE_BUSY_TIMEOUT_MS,
    Database,
    alembic_config,
    create_engine_for,
    current_revision,
    head_revision,
    migrate,
    normalize_url,
)
from pixmill.core.models import Base, Job, JobEvent, JobKind, JobStatus, Pipeline, new_id

BACKENDS = ["sqlite", "postgresql"]
POSTGRES_ADMIN_URL = os.environ.get(
    "PIXMILL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SKIP_POSTGRES_VAR = "PIXMILL_TEST_SKIP_POSTGRES"
TABLES = {"jobs", "job_events", "pipelines", "alembic_version"}


# ----- fixtures shared with test_jobstore.py -----------------------------------------------


def require_postgres(admin_url: str = POSTGRES_ADMIN_URL) -> None:
    """Fail (or skip, if PIXMILL_TEST_SKIP_POSTGRES=1) when PostgreSQL cannot be reached."""
    problem = _postgres_problem(admin_url)
    if problem is None:
        return
    if os.environ.get(SKIP_POSTGRES_VAR) == "1":
        pytest.skip(problem)
    pytest.fail(f"{problem} (set {SKIP_POSTGRES_VAR}=1 to skip PostgreSQL tests)", pytrace=False)


@functools.cache
def _postgres_problem(admin_url: str) -> str | None:
    engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as error:
        where = make_url(admin_url).render_as_string()
        return f"PostgreSQL at {where} unreachable: {type(error).__name__}: {error.args[0]}"
    finally:
        engine.dispose()


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped on exit."""
    require_postgres()
    name = f"pixmill_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                make_url(POSTGRES_ADMIN_URL)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def empty_database_url(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
    else:
        with throwaway_postgres() as url:
            yield url


@pytest.fixture(scope="module", params=BACKENDS)
def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One migrated database per backend and test module."""
    with empty_database_url(request.param, tmp_path_factory.mktemp("db")) as url:
        database = Database.from_url(url)
        try:
            yield database
        finally:
            database.dispose()


@pytest.fixture
def database(migrated_database: Database) -> Database:
    """The module's database, emptied for this test."""
    with migrated_database.sessions.begin() as session:
        for table in ("job_events", "jobs", "pipelines"):
            session.execute(text(f"DELETE FROM {table}"))
    return migrated_database


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new database with no tables at all."""
    with empty_database_url(request.param, tmp_path) as url:
        yield url


# ----- migrations --------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_from_empty_to_head_twice(empty_url: str) -> None:
    database = Database.from_url(empty_url, run_migrations=False)
    try:
        assert current_revision(database.engine) is None
        assert _tables(empty_url) == set()

        migrate(database.engine)
        assert current_revision(database.engine) == head_revision() is not None
        assert _tables(empty_url) == TABLES

        job_id = new_id()
        with database.sessions.begin() as session:
            session.add(_job(job_id))
        migrate(database.engine)  # a second start: nothing to do, nothing lost
        assert current_revision(database.engine) == head_revision()
        with database.sessions() as session:
            assert session.get(Job, job_id) is not None
            versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [(head_revision(),)]
    finally:
        database.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    database = Database.from_url(empty_url)
    config = alembic_config()
    try:
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert _tables(empty_url) == {"alembic_version"}
        assert current_revision(database.engine) is None
        migrate(database.engine)
        assert _tables(empty_url) == TABLES
    finally:
        database.dispose()


def test_from_url_migrates_by_default(empty_url: str) -> None:
    first = Database.from_url(empty_url)
    second = Database.from_url(empty_url)  # another process starting later
    try:
        assert current_revision(first.engine) == current_revision(second.engine) == head_revision()
    finally:
        first.dispose()
        second.dispose()


_MIGRATE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pixmill.core.db import create_engine_for, current_revision, migrate
    engine = create_engine_for(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # the starting gun: every process is imported and waiting
    migrate(engine)
    print(current_revision(engine), flush=True)
    """
)


def run_in_lockstep(script: str, *args: str, count: int = 2) -> list[tuple[int, str, str]]:
    """Start `count` Python processes running `script`; each prints "ready" once set up and
    then waits for "go" on stdin, so they all reach the interesting part at the same moment.
    Returns (returncode, stdout, stderr) for each; every wait is bounded."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    return [
        (process.returncode, stdout, stderr)
        for process, (stdout, stderr) in zip(processes, outputs, strict=True)
    ]


def test_concurrent_migrations_from_two_processes(empty_url: str) -> None:
    for returncode, stdout, stderr in run_in_lockstep(_MIGRATE_SCRIPT, empty_url):
        assert returncode == 0, stderr
        assert stdout.strip() == head_revision()
    assert _tables(empty_url) == TABLES


def test_concurrent_migrations_from_several_threads(empty_url: str) -> None:
    databases = [Database.from_url(empty_url, run_migrations=False) for _ in range(4)]
    barrier = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def run(database: Database) -> None:
        try:
            barrier.wait(timeout=10)
            migrate(database.engine)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert all(current_revision(db.engine) == head_revision() for db in databases)
    finally:
        for db in databases:
            db.dispose()


def test_migration_waits_for_the_postgres_advisory_lock() -> None:
    with throwaway_postgres() as url:
        holder = create_engine_for(url)
        database = Database.from_url(url, run_migrations=False)
        done = threading.Event()
        try:
            with holder.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
                worker = threading.Thread(target=lambda: (migrate(database.engine), done.set()))
                worker.start()
                assert not done.wait(0.5), "migrate() ran without taking the migration lock"
                assert current_revision(database.engine) is None
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
                worker.join(timeout=30)
            assert done.is_set()
            assert current_revision(database.engine) == head_revision()
        finally:
            holder.dispose()
            database.dispose()


def test_sqlite_migration_waits_for_another_writer(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "busy.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA journal_mode = WAL")
    blocker.execute("BEGIN IMMEDIATE")  # another process mid-write
    release = threading.Timer(0.6, lambda: blocker.execute("COMMIT"))
    database = Database.from_url(f"sqlite:///{path}", run_migrations=False)
    try:
        release.start()
        started = time.monotonic()
        migrate(database.engine)
        assert time.monotonic() - started >= 0.5  # it waited for the lock, then went ahead
        assert current_revision(database.engine) == head_revision()
    finally:
        release.join()
        blocker.close()
        database.dispose()


def test_models_match_the_migrations(database: Database) -> None:
    with warnings.catch_warnings():
        # Neither dialect reflects the expression index on pipelines; it is tested below.
        warnings.simplefilter("ignore")
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    assert differences == []


# ----- engines and configuration ----------------------------------------------------------


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        seen: dict[str, Any] = {}

        def read_pragmas() -> None:  # from another thread: check_same_thread is off
            with engine.connect() as connection:
                for pragma in ("journal_mode", "foreign_keys", "busy_timeout"):
                    seen[pragma] = connection.exec_driver_sql(f"PRAGMA {pragma}").scalar()

        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        thread = threading.Thread(target=read_pragmas)
        thread.start()
        thread.join(timeout=10)
        assert seen == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
        }
    finally:
        engine.dispose()


def test_postgres_engine_pings_pooled_connections() -> None:
    require_postgres()
    engine = create_engine_for(POSTGRES_ADMIN_URL)
    try:
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u@host/db", "postgresql+psycopg"),
        ("postgresql://u@host/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@host/db", "postgresql+psycopg"),
        ("sqlite:////tmp/x.db", "sqlite"),
    ],
)
def test_database_urls_are_normalized(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


def test_database_from_config_creates_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    database = Database.from_config(Config(data_dir=data_dir))
    try:
        assert database.dialect == "sqlite"
        assert (data_dir / "pixmill.db").is_file()
        assert current_revision(database.engine) == head_revision()
    finally:
        database.dispose()


def test_database_from_config_uses_database_url(tmp_path: Path) -> None:
    with throwaway_postgres() as url:
        database = Database.from_config(Config(data_dir=tmp_path / "data", database_url=url))
        try:
            assert database.dialect == "postgresql"
            assert current_revision(database.engine) == head_revision()
            assert not (tmp_path / "data" / "pixmill.db").exists()
        finally:
            database.dispose()


def test_unreachable_postgres_fails_unless_told_to_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    monkeypatch.delenv(SKIP_POSTGRES_VAR, raising=False)
    with pytest.raises(pytest.fail.Exception):
        require_postgres(nowhere)
    monkeypatch.setenv(SKIP_POSTGRES_VAR, "1")
    with pytest.raises(pytest.skip.Exception):
        require_postgres(nowhere)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_never_reuses_the_parents_connection(empty_url: str) -> None:
    database = Database.from_url(empty_url)
    try:
        with database.engine.connect() as connection:  # the pool now holds one connection
            parent_backend = _backend_id(connection)
        pid = os.fork()
        if pid == 0:  # the child: a work-horse
            code = 1
            try:
                with database.engine.connect() as connection:
                    child_backend = _backend_id(connection)
                    same = child_backend == parent_backend and database.dialect != "sqlite"
                    code = 3 if same else 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, 9)
            pytest.fail("forked child did not finish")
        assert os.waitstatus_to_exitcode(status) == 0
        with database.engine.connect() as connection:  # the parent's connection still works
            assert _backend_id(connection) == parent_backend
    finally:
        database.dispose()


def _backend_id(connection: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()
    return connection.execute(text("SELECT 1")).scalar()


# ----- types and constraints ---------------------------------------------------------------


def _job(job_id: str | None = None, **values: Any) -> Job:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": job_id or new_id(),
        "kind": JobKind.TOOL,
        "status": JobStatus.QUEUED,
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(values)
    return Job(**fields)


def test_datetimes_round_trip_as_aware_utc(database: Database) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=india)
    started = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    job_id = new_id()
    with database.sessions.begin() as session:
        session.add(_job(job_id, created_at=created, started_at=started))
    with database.sessions() as session:
        if database.dialect == "postgresql":  # the server answers in the session's zone
            session.execute(text("SET TIME ZONE 'America/New_York'"))
        job = session.get(Job, job_id)
        assert job is not None
        assert job.created_at == created
        assert job.created_at.utcoffset() == timedelta(0)
        assert job.created_at.tzinfo is UTC
        assert (job.created_at.hour, job.created_at.microsecond) == (18, 123456)
        assert job.started_at == started and job.started_at.tzinfo is UTC
        assert job.finished_at is None
        # Comparisons in SQL see the same instants.
        found = session.scalars(
            select(Job.id).where(Job.created_at == datetime(2024, 2, 29, 18, 29, 58, 123456, UTC))
        ).all()
        assert found == [job_id]


def test_naive_datetimes_are_refused(database: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"), database.sessions.begin() as s:
        s.add(_job(created_at=datetime(2024, 1, 1, 12, 0)))


def test_json_columns_round_trip(database: Database) -> None:
    settings = {
        "width": 800,
        "quality": 0.85,
        "big": 2**53,
        "negative": -7,
        "flags": [True, False, None],
        "text": 'ünïcødé ✓ "quoted" \\ back',
        "nested": {"deeper": {"list": [1, "two", 3.5, {"x": []}]}, "empty": {}},
    }
    inputs = [{"key": "uploads/a/0", "filename": "a.jpg", "size": 12, "format": "jpeg"}]
    result = {"labels": [{"name": "cat", "score": 0.99}], "count": 1}
    job_id = new_id()
    with database.sessions.begin() as session:
        session.add(_job(job_id, settings=settings, inputs=inputs, result=result))
    with database.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.settings == settings
        assert job.inputs == inputs
        assert job.outputs == []
        assert job.result == result
        assert type(job.settings["big"]) is int and type(job.settings["quality"]) is float


def test_events_are_deleted_with_their_job_by_the_database(database: Database) -> None:
    job_id = new_id()
    with database.sessions.begin() as session:
        session.add(_job(job_id))
        session.flush()
        for kind in ("created", "claimed"):
            session.add(
                JobEvent(job_id=job_id, at=datetime.now(UTC), type=kind, status=JobStatus.QUEUED)
            )
    with database.sessions.begin() as session:  # plain SQL: only the foreign key acts
        session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
    with database.sessions() as session:
        assert session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all() == []


def test_foreign_keys_are_enforced(database: Database) -> None:
    event = JobEvent(job_id=new_id(), at=datetime.now(UTC), type="x", status=JobStatus.QUEUED)
    with pytest.raises(IntegrityError), database.sessions.begin() as session:
        session.add(event)


def test_deleting_a_pipeline_keeps_its_jobs(database: Database) -> None:
    pipeline_id, job_id = new_id(), new_id()
    now = datetime.now(UTC)
    with database.sessions.begin() as session:
        session.add(Pipeline(id=pipeline_id, name="p", steps=[], created_at=now, updated_at=now))
        session.flush()
        session.add(_job(job_id, kind=JobKind.PIPELINE, pipeline_id=pipeline_id))
    with database.sessions.begin() as session:
        session.execute(text("DELETE FROM pipelines WHERE id = :id"), {"id": pipeline_id})
    with database.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.pipeline_id is None


@pytest.mark.parametrize("owner", [None, "user-1"])
def test_pipeline_names_are_unique_per_owner_in_the_database(
    database: Database, owner: str | None
) -> None:
    now = datetime.now(UTC)

    def pipeline(owner_id: str | None) -> Pipeline:
        return Pipeline(
            id=new_id(), owner_id=owner_id, name="thumbs", steps=[], created_at=now, updated_at=now
        )

    with database.sessions.begin() as session:
        session.add(pipeline(owner))
        session.add(pipeline("someone-else"))
    with pytest.raises(IntegrityError), database.sessions.begin() as session:
        session.add(pipeline(owner))


def test_unknown_enum_values_are_refused(database: Database) -> None:
    with pytest.raises(StatementError), database.sessions.begin() as session:
        session.add(_job(status="exploded"))
