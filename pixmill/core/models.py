"""The SQL tables of pixmill's durable metadata: jobs, their event log, saved pipelines.

The job row is the truth about a job; Redis only carries the work. Tables are declared here
once and created or changed only by the Alembic migrations in `pixmill/migrations` (a test
checks that the two agree on both SQLite and PostgreSQL). Later tables (files, users, keys,
webhooks) join the same `Base`.

Portability rules, so that one schema behaves identically on SQLite and PostgreSQL:
- datetimes are `UTCDateTime`: timezone-aware UTC in Python on both backends, naive refused;
- states and kinds are stored as short strings, not native enums, so adding a kind later is
  a code change rather than an `ALTER TYPE`;
- JSON columns are JSONB on PostgreSQL and JSON text on SQLite.

This module imports nothing from `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 32
OWNER_ID_LENGTH = 64
TOOL_ID_LENGTH = 100
PIPELINE_NAME_LENGTH = 200

# Deterministic constraint names: identical on both backends and predictable for later
# migrations (SQLite can only alter constraints it can name in batch mode).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A fresh 32-character lowercase hex id, the form every pixmill row id takes."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
)
UNFINISHED_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})


class JobKind(StrEnum):
    TOOL = "tool"
    PIPELINE = "pipeline"
    BATCH = "batch"
    FETCH = "fetch"
    EXTRACT = "extract"
    # Installs or uninstalls a feature bundle (`pixmill.features`); `tool_id` holds its id.
    FEATURE = "feature"


class BlobRef(TypedDict):
    """Where one input or output file lives in the blob store, and what it is."""

    key: str
    filename: str
    size: int
    format: str | None


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    PostgreSQL stores `timestamptz` and hands it back in the session's time zone; SQLite has
    no time zone at all. Storing UTC and re-attaching UTC on the way out makes both return
    the same value. Naive datetimes are refused: their meaning is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a timezone")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _str_enum(enum: type[StrEnum]) -> SAEnum:
    # Stored as VARCHAR holding the enum's value; no native type, no CHECK constraint, so a
    # new member needs no migration.
    return SAEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class Pipeline(Base):
    """A named list of tool steps saved by a user; names are unique per owner."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(String(OWNER_ID_LENGTH))
    name: Mapped[str] = mapped_column(String(PIPELINE_NAME_LENGTH))
    description: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # `coalesce` so that anonymous pipelines (owner NULL, until auth lands) are unique by
        # name too: a plain UNIQUE treats every NULL owner as distinct on both backends.
        Index(
            "uq_pipelines_owner_name",
            func.coalesce(owner_id, ""),
            name,
            unique=True,
        ),
    )


class Job(Base):
    """One unit of asynchronous or recorded work and everything a client may ask about it."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    kind: Mapped[JobKind] = mapped_column(_str_enum(JobKind))
    tool_id: Mapped[str | None] = mapped_column(String(TOOL_ID_LENGTH))
    pipeline_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("pipelines.id", ondelete="SET NULL")
    )
    # A batch spreads its members over the workers as child jobs; deleting the batch
    # deletes them.
    parent_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    owner_id: Mapped[str | None] = mapped_column(String(OWNER_ID_LENGTH))
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus), default=JobStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_current: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[list[Any]] = mapped_column(default=list)
    outputs: Mapped[list[Any]] = mapped_column(default=list)
    # The JSON an extractor returned; NULL for tools, whose results are files.
    result: Mapped[dict[str, Any] | None] = mapped_column()
    input_size: Mapped[int] = mapped_column(BigInteger, default=0)
    output_size: Mapped[int] = mapped_column(BigInteger, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Hash of input bytes, tool id and version, normalized settings: same key, same result.
    cache_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # While processing, the worker must heartbeat before this; past it the reconciler
    # takes the job back.
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobEvent.id",
        lazy="raise",
    )

    __table_args__ = (
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_jobs_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_jobs_kind_created_at", "kind", "created_at"),
        Index("ix_jobs_tool_id_created_at", "tool_id", "created_at"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_cache_key", "cache_key"),
        Index("ix_jobs_pipeline_id", "pipeline_id"),
        Index("ix_jobs_parent_id", "parent_id"),
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class JobEvent(Base):
    """One entry of a job's history: a state change, a cancel request, or a note."""

    __tablename__ = "job_events"

    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus))
    progress: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="events", lazy="raise")

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)
