"""The job records: every state change of a job, each in its own short transaction.

The SQL row is the truth about a job (Redis only carries the work), so every transition is
checked here, against the row as it is in the database at that moment:

    queued ──claim──▶ processing ──complete──▶ completed
      │                 │  ├──fail──────────▶ failed
      │                 │  ├──requeue──▶ queued (attempts left) | failed ATTEMPTS_EXHAUSTED
      │                 │  └──cancel: flag only; the worker stops, then confirm_cancel ─▶ cancelled
      ├──cancel─────────┼─────────────────────▶ cancelled
      └──fail───────────┴─────────────────────▶ failed

An illegal transition raises a 409 `PixmillError`; an unknown id a 404 `JOB_NOT_FOUND`.
Writes lock the row first (`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on
SQLite), and `claim` is a single conditional `UPDATE ... WHERE status = 'queued'`, so two
workers can never both run a job. Worker-side calls may pass the `attempt` they claimed: a
worker whose lease was taken back (the job was requeued and claimed again) then gets a 409
`LEASE_LOST` instead of overwriting the newer attempt's work.

Every state change appends a `job_events` row; heartbeats only move the lease and progress.

This module imports nothing from `pixmill.server`, `pixmill.cli` or `pixmill.plugins`.
"""

from __future__ import annotations

import builtins
import math
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    and_,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pixmill.core import defaults
from pixmill.core.db import SQLITE_BEGIN_IMMEDIATE
from pixmill.core.errors import BadRequestError, ConflictError, NotFoundError
from pixmill.core.models import (
    FINAL_STATUSES,
    ID_LENGTH,
    PIPELINE_NAME_LENGTH,
    UNFINISHED_STATUSES,
    BlobRef,
    Job,
    JobEvent,
    JobKind,
    JobStatus,
    Pipeline,
    UTCDateTime,
    new_id,
    utcnow,
)

MAX_PAGE_LIMIT = 100
DEFAULT_PAGE_LIMIT = 20
# Bounded batches for the reconciler: it loops rather than loading a whole backlog at once.
RECONCILE_BATCH = 500

_ID = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")
_E = TypeVar("_E", JobStatus, JobKind)


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing and the number of jobs matching the filters."""

    items: builtins.list[Job]
    total: int
    page: int
    limit: int

    @property
    def has_more(self) -> bool:
        return self.page * self.limit < self.total


class JobStore:
    """Job and pipeline records over a SQLAlchemy session factory (SQLite or PostgreSQL)."""

    def __init__(
        self, sessions: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = sessions
        self._clock = clock

    # ----- transactions -------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the JobStore clock must return timezone-aware datetimes")
        return now

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._sessions(expire_on_commit=False) as session, session.begin():
            if session.get_bind().dialect.name == "sqlite":
                # Take the write lock now: a deferred transaction that reads, then writes,
                # fails instead of waiting when another writer got in between.
                session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions(expire_on_commit=False) as session:
            yield session

    def _locked(self, session: Session, job_id: str) -> Job:
        job = None
        if _ID.match(job_id):
            job = session.scalars(
                select(Job).where(Job.id == job_id).with_for_update()
            ).one_or_none()
        if job is None:
            raise _job_not_found(job_id)
        return job

    def _event(
        self,
        session: Session,
        job: Job,
        type_: str,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> JobEvent:
        event = JobEvent(
            job_id=job.id,
            at=job.updated_at,
            type=type_,
            status=job.status,
            progress=job.progress,
            message=message,
            data=_json_value(dict(data), "event data") if data is not None else None,
        )
        session.add(event)
        return event

    # ----- creating and reading -----------------------------------------------------------

    def create(
        self,
        kind: JobKind | str,
        *,
        tool_id: str | None = None,
        pipeline_id: str | None = None,
        parent_id: str | None = None,
        owner_id: str | None = None,
        settings: Mapping[str, Any] | None = None,
        inputs: Sequence[Mapping[str, Any]] = (),
        input_size: int | None = None,
        queue: str = "default",
        max_attempts: int = defaults.JOB_MAX_ATTEMPTS,
        cache_key: str | None = None,
        progress_total: int | None = None,
        message: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """A new queued job. Pass `job_id` when blobs were stored under it beforehand."""
        job_kind = _enum(JobKind, kind, "kind")
        if job_id is not None and not _ID.match(job_id):
            raise BadRequestError(
                "a job id is 32 lowercase hex characters", details={"jobId": job_id}
            )
        if max_attempts < 1:
            raise BadRequestError("max_attempts must be at least 1")
        if not queue:
            raise BadRequestError("a job needs a queue name")
        refs = _blob_refs(inputs, "inputs")
        if progress_total is not None and progress_total < 0:
            raise BadRequestError("progress_total must not be negative")
        now = self._now()
        with self._write() as session:
            if pipeline_id is not None and session.get(Pipeline, pipeline_id) is None:
                raise _pipeline_not_found(pipeline_id)
            if parent_id is not None and session.get(Job, parent_id) is None:
                raise _job_not_found(parent_id)
            job = Job(
                id=job_id or new_id(),
                kind=job_kind,
                tool_id=tool_id,
                pipeline_id=pipeline_id,
                parent_id=parent_id,
                owner_id=owner_id,
                status=JobStatus.QUEUED,
                progress=0.0,
                progress_current=0 if progress_total is not None else None,
                progress_total=progress_total,
                message=message,
                attempt=0,
                max_attempts=max_attempts,
                queue=queue,
                cancel_requested=False,
                settings=_json_value(dict(settings or {}), "settings"),
                inputs=refs,
                outputs=[],
                result=None,
                input_size=_total_size(refs) if input_size is None else input_size,
                output_size=0,
                cache_key=cache_key,
                created_at=now,
                updated_at=now,
            )
            session.add(job)
            try:
                session.flush()
            except IntegrityError as error:
                raise ConflictError(
                    "a job with this id already exists",
                    code="JOB_EXISTS",
                    details={"jobId": job.id},
                ) from error
            self._event(session, job, "created", message)
        return job

    def record_completed(
        self,
        kind: JobKind | str,
        *,
        parent_id: str,
        tool_id: str | None = None,
        owner_id: str | None = None,
        settings: Mapping[str, Any] | None = None,
        inputs: Sequence[Mapping[str, Any]] = (),
        outputs: Sequence[Mapping[str, Any]] = (),
        queue: str = "default",
        cache_key: str | None = None,
        started_at: datetime | None = None,
        message: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """A completed child of `parent_id` for work its parent's worker did itself (a
        pipeline's step): one transaction, the row and its `completed` event, never queued,
        so there is no claim or lease. 404 when the parent is gone."""
        job_kind = _enum(JobKind, kind, "kind")
        if job_id is not None and not _ID.match(job_id):
            raise BadRequestError(
                "a job id is 32 lowercase hex characters", details={"jobId": job_id}
            )
        input_refs = _blob_refs(inputs, "inputs")
        output_refs = _blob_refs(outputs, "outputs")
        now = self._now()
        with self._write() as session:
            if session.get(Job, parent_id) is None:
                raise _job_not_found(parent_id)
            job = Job(
                id=job_id or new_id(),
                kind=job_kind,
                tool_id=tool_id,
                parent_id=parent_id,
                owner_id=owner_id,
                status=JobStatus.COMPLETED,
                progress=1.0,
                message=message,
                attempt=1,
                max_attempts=1,
                queue=queue,
                cancel_requested=False,
                settings=_json_value(dict(settings or {}), "settings"),
                inputs=input_refs,
                outputs=output_refs,
                input_size=_total_size(input_refs),
                output_size=_total_size(output_refs),
                cache_key=cache_key,
                created_at=started_at or now,
                started_at=started_at or now,
                finished_at=now,
                updated_at=now,
            )
            session.add(job)
            session.flush()
            summary = {"files": len(output_refs), "bytes": job.output_size}
            self._event(session, job, "completed", message, summary)
        return job

    def get(self, job_id: str) -> Job:
        """The job; 404 `JOB_NOT_FOUND` if there is none with this id."""
        with self._read() as session:
            job = session.get(Job, job_id) if _ID.match(job_id) else None
            if job is None:
                raise _job_not_found(job_id)
            return job

    def list(
        self,
        *,
        status: JobStatus | str | Collection[JobStatus | str] | None = None,
        kind: JobKind | str | Collection[JobKind | str] | None = None,
        tool_id: str | None = None,
        owner_id: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        page: int = 1,
        limit: int = DEFAULT_PAGE_LIMIT,
    ) -> JobPage:
        """Jobs matching every given filter, newest first; `created_from <= createdAt <=
        created_to`. `page` counts from 1; `limit` is 1..100. Bad values give 400.
        `top_level` leaves out the jobs that belong to another (batch members, pipeline
        steps); `parent_id` lists only the jobs of that one."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise _invalid("page", "must be an integer of at least 1")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_PAGE_LIMIT
        ):
            raise _invalid("limit", f"must be an integer between 1 and {MAX_PAGE_LIMIT}")
        for name, value in (("createdFrom", created_from), ("createdTo", created_to)):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise _invalid(name, "must include a timezone")
        if created_from and created_to and created_from > created_to:
            raise _invalid("createdFrom", "must not be after createdTo")

        conditions: builtins.list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(Job.status.in_(_enum_set(JobStatus, status, "status")))
        if kind is not None:
            conditions.append(Job.kind.in_(_enum_set(JobKind, kind, "kind")))
        if tool_id is not None:
            conditions.append(Job.tool_id == tool_id)
        if owner_id is not None:
            conditions.append(Job.owner_id == owner_id)
        if parent_id is not None:
            conditions.append(Job.parent_id == parent_id)
        elif top_level:
            conditions.append(Job.parent_id.is_(None))
        if created_from is not None:
            conditions.append(Job.created_at >= created_from)
        if created_to is not None:
            conditions.append(Job.created_at <= created_to)

        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(Job).where(*conditions))
            query = (
                select(Job)
                .where(*conditions)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .offset((page - 1) * limit)
                .limit(limit)
            )
            items = builtins.list(session.scalars(query))
        return JobPage(items=items, total=total or 0, page=page, limit=limit)

    # ----- the worker's side --------------------------------------------------------------

    def claim(self, job_id: str, lease_seconds: float) -> Job | None:
        """Take a queued job for running: processing, attempt + 1, leased for
        `lease_seconds`. None when it cannot be claimed (taken, cancelled, finished, deleted):
        the caller must then not run it."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not _ID.match(job_id):
            return None
        now = self._now()
        with self._write() as session:
            # One conditional UPDATE: of any number of concurrent claims, the database lets
            # exactly one match `status = 'queued'`.
            claimed = cast(
                CursorResult[Any],
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.status == JobStatus.QUEUED,
                        Job.cancel_requested.is_(False),
                        Job.attempt < Job.max_attempts,
                    )
                    .values(
                        status=JobStatus.PROCESSING,
                        attempt=Job.attempt + 1,
                        started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())),
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        updated_at=now,
                        progress=0.0,
                        message=None,
                        error_code=None,
                        error_message=None,
                    )
                    .execution_options(synchronize_session=False)
                ),
            )
            if claimed.rowcount != 1:
                return None
            job = session.scalars(select(Job).where(Job.id == job_id)).one()
            self._event(session, job, "claimed", data={"attempt": job.attempt})
        return job

    def heartbeat(
        self,
        job_id: str,
        lease_seconds: float,
        *,
        progress: float | None = None,
        current: int | None = None,
        total: int | None = None,
        message: str | None = None,
        attempt: int | None = None,
    ) -> Job:
        """Extend a processing job's lease and record progress (0..1, or `current`/`total`).

        The returned job carries `cancel_requested`, so one call both reports and checks.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_processing(job, attempt)
            _apply_progress(job, progress, current, total)
            if message is not None:
                job.message = message
            job.lease_expires_at = now + timedelta(seconds=lease_seconds)
            job.updated_at = now
        return job

    def complete(
        self,
        job_id: str,
        outputs: Sequence[Mapping[str, Any]] = (),
        *,
        output_size: int | None = None,
        result: Mapping[str, Any] | None = None,
        message: str | None = None,
        attempt: int | None = None,
    ) -> Job:
        """processing → completed, with the output blobs and (extractors) the result JSON.

        A cancel requested too late to stop the work does not discard its result.
        """
        refs = _blob_refs(outputs, "outputs")
        result_json = _json_value(dict(result), "result") if result is not None else None
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_processing(job, attempt)
            job.status = JobStatus.COMPLETED
            job.progress = 1.0
            if job.progress_total is not None:
                job.progress_current = job.progress_total
            job.outputs = refs
            job.output_size = _total_size(refs) if output_size is None else output_size
            job.result = result_json
            job.message = message
            job.finished_at = now
            job.lease_expires_at = None
            job.updated_at = now
            self._event(
                session,
                job,
                "completed",
                message,
                {"files": len(refs), "bytes": job.output_size},
            )
        return job

    def fail(self, job_id: str, code: str, message: str, *, attempt: int | None = None) -> Job:
        """queued or processing → failed with an error code and a human message."""
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_unfinished(job)
            if job.status is JobStatus.PROCESSING:
                _check_attempt(job, attempt)
            self._finish_failed(session, job, code, message, now)
        return job

    def _finish_failed(
        self, session: Session, job: Job, code: str, message: str, now: datetime
    ) -> None:
        job.status = JobStatus.FAILED
        job.error_code = code
        job.error_message = message
        job.finished_at = now
        job.lease_expires_at = None
        job.updated_at = now
        self._event(session, job, "failed", message, {"code": code})

    def requeue(self, job_id: str, reason: str, *, attempt: int | None = None) -> Job:
        """Give a processing job back to the queue (its worker died, or a transient error).

        With no attempts left it fails with `ATTEMPTS_EXHAUSTED`; if a cancel was requested
        it ends cancelled instead. A job that is already queued is returned unchanged, so
        reconcilers racing each other are harmless. The caller enqueues it again.
        """
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_unfinished(job)
            if job.status is JobStatus.QUEUED:
                return job
            _check_attempt(job, attempt)
            if job.cancel_requested:
                self._finish_cancelled(session, job, now)
            elif job.attempt >= job.max_attempts:
                self._finish_failed(
                    session,
                    job,
                    "ATTEMPTS_EXHAUSTED",
                    f"gave up after {job.attempt} attempts; last: {reason}",
                    now,
                )
            else:
                job.status = JobStatus.QUEUED
                job.progress = 0.0
                if job.progress_total is not None:
                    job.progress_current = 0
                job.message = reason
                job.lease_expires_at = None
                job.updated_at = now
                self._event(session, job, "requeued", reason, {"attempt": job.attempt})
        return job

    def confirm_cancel(self, job_id: str, *, attempt: int | None = None) -> Job:
        """processing → cancelled, called by the worker once it stopped on a cancel request."""
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_processing(job, attempt)
            if not job.cancel_requested:
                raise ConflictError(
                    "no cancel was requested for this job",
                    code="CANCEL_NOT_REQUESTED",
                    details={"jobId": job.id},
                )
            self._finish_cancelled(session, job, now)
        return job

    def _finish_cancelled(self, session: Session, job: Job, now: datetime) -> None:
        job.status = JobStatus.CANCELLED
        job.message = "cancelled"
        job.finished_at = now
        job.lease_expires_at = None
        job.updated_at = now
        self._event(session, job, "cancelled")

    # ----- the client's side --------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once (it never runs). Processing: `cancel_requested` is set
        and the worker stops cooperatively. Finished: 409 `JOB_FINISHED`."""
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            _require_unfinished(job)
            if job.status is JobStatus.QUEUED:
                job.cancel_requested = True
                self._finish_cancelled(session, job, now)
            elif not job.cancel_requested:
                job.cancel_requested = True
                job.updated_at = now
                self._event(session, job, "cancel_requested")
        return job

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether the worker should stop: cancel requested, cancelled, or the job deleted."""
        with self._read() as session:
            row = None
            if _ID.match(job_id):
                row = session.execute(
                    select(Job.cancel_requested, Job.status).where(Job.id == job_id)
                ).one_or_none()
            if row is None:
                return True
            return bool(row.cancel_requested) or row.status is JobStatus.CANCELLED

    def delete(self, job_id: str) -> builtins.list[BlobRef]:
        """Delete the job, its events and child jobs; return every blob they referenced."""
        with self._write() as session:
            job = self._locked(session, job_id)
            refs: builtins.list[BlobRef] = [*job.inputs, *job.outputs]
            # Child jobs (batch members) cascade in the database; collect their blobs first.
            parents = [job.id]
            while parents:
                children = builtins.list(
                    session.execute(
                        select(Job.id, Job.inputs, Job.outputs).where(Job.parent_id.in_(parents))
                    )
                )
                for child in children:
                    refs.extend([*child.inputs, *child.outputs])
                parents = [child.id for child in children]
            session.execute(delete(Job).where(Job.id == job.id))
        return refs

    # ----- the reconciler's side ----------------------------------------------------------

    def unfinished_with_expired_lease(
        self, now: datetime | None = None, *, limit: int = RECONCILE_BATCH
    ) -> builtins.list[Job]:
        """Processing jobs whose worker stopped heartbeating before `now`: to requeue."""
        at = now or self._now()
        with self._read() as session:
            query = (
                select(Job)
                .where(
                    Job.status == JobStatus.PROCESSING,
                    (Job.lease_expires_at < at) | Job.lease_expires_at.is_(None),
                )
                .order_by(Job.lease_expires_at, Job.id)
                .limit(limit)
            )
            return builtins.list(session.scalars(query))

    def unfinished(
        self,
        queued_before: datetime,
        *,
        limit: int = RECONCILE_BATCH,
        after: tuple[datetime, str] | None = None,
    ) -> builtins.list[Job]:
        """Queued or processing jobs untouched since `queued_before`, oldest first.

        The reconciler checks each against Redis; the cut-off leaves the enqueue that follows
        a commit (and live heartbeats) time to happen. `after` is the `(updated_at, id)` of
        the last row of the previous page (keyset pagination: stable while rows change).
        """
        with self._read() as session:
            query = select(Job).where(
                Job.status.in_(UNFINISHED_STATUSES), Job.updated_at < queued_before
            )
            if after is not None:
                at, last_id = after
                query = query.where(
                    or_(Job.updated_at > at, and_(Job.updated_at == at, Job.id > last_id))
                )
            query = query.order_by(Job.updated_at, Job.id).limit(limit)
            return builtins.list(session.scalars(query))

    def completed_between(
        self,
        start: datetime,
        end: datetime,
        *,
        limit: int = RECONCILE_BATCH,
        after: tuple[datetime, str] | None = None,
    ) -> builtins.list[Job]:
        """Jobs that completed in [start, end), oldest first; `after` is the `(finished_at,
        id)` of the previous page's last row (keyset pagination, as `unfinished`)."""
        with self._read() as session:
            query = select(Job).where(
                Job.status == JobStatus.COMPLETED,
                Job.finished_at >= start,
                Job.finished_at < end,
            )
            if after is not None:
                at, last_id = after
                query = query.where(
                    or_(Job.finished_at > at, and_(Job.finished_at == at, Job.id > last_id))
                )
            query = query.order_by(Job.finished_at, Job.id).limit(limit)
            return builtins.list(session.scalars(query))

    def children(self, parent_id: str) -> builtins.list[Job]:
        """The jobs created for `parent_id` (a batch's members), in creation order."""
        with self._read() as session:
            query = select(Job).where(Job.parent_id == parent_id).order_by(Job.created_at, Job.id)
            return builtins.list(session.scalars(query))

    def wait_until_final(
        self, job_id: str, timeout: float, *, first_poll: float = 0.01, max_poll: float = 0.25
    ) -> Job:
        """Poll the row until it is final or `timeout` seconds pass; the row as last read.

        Polling, not pub/sub: the row is the truth, it works with and without Redis, and a
        web request waiting on its own batch or pipeline costs one indexed read per poll.
        The interval starts short (small jobs answer quickly) and grows to `max_poll`.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        interval = first_poll
        while True:
            job = self.get(job_id)
            left = deadline - time.monotonic()
            if job.is_final or left <= 0:
                return job
            time.sleep(min(interval, left))
            interval = min(interval * 2, max_poll)

    def find_completed_by_cache_key(self, cache_key: str) -> Job | None:
        """The newest completed job with this content hash: its outputs can be reused."""
        with self._read() as session:
            return session.scalars(
                select(Job)
                .where(Job.cache_key == cache_key, Job.status == JobStatus.COMPLETED)
                .order_by(Job.finished_at.desc(), Job.id)
                .limit(1)
            ).one_or_none()

    # ----- events -------------------------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        type_: str,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> JobEvent:
        """Append a note to a job's history (e.g. a retry's backoff, a per-file error)."""
        if not type_ or len(type_) > 32:
            raise BadRequestError("an event type is 1 to 32 characters")
        now = self._now()
        with self._write() as session:
            job = self._locked(session, job_id)
            event = self._event(session, job, type_, message, data)
            event.at = now
        return event

    def record_progress(
        self,
        job_id: str,
        type_: str,
        *,
        current: int,
        total: int,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Job:
        """Progress of a job that others do the work of (a batch waiting for its files): its
        `current`/`total` and message, with an event, in one transaction. Unlike `heartbeat`
        it takes a queued row and touches no lease; `updated_at` is left alone too, so the
        reconciler still sees how long the row has waited. A finished job is left as it is."""
        with self._write() as session:
            job = self._locked(session, job_id)
            if job.is_final:
                return job
            _apply_progress(job, None, current, total)
            if message is not None:
                job.message = message
            self._event(session, job, type_, message, data)
        return job

    def events(self, job_id: str, *, after_id: int | None = None) -> builtins.list[JobEvent]:
        """The job's events in order; `after_id` resumes after the last one seen."""
        with self._read() as session:
            if not _ID.match(job_id) or session.get(Job, job_id) is None:
                raise _job_not_found(job_id)
            query = select(JobEvent).where(JobEvent.job_id == job_id)
            if after_id is not None:
                query = query.where(JobEvent.id > after_id)
            return builtins.list(session.scalars(query.order_by(JobEvent.id)))

    # ----- saved pipelines ----------------------------------------------------------------

    def save_pipeline(
        self,
        name: str,
        steps: Sequence[Any],
        *,
        description: str = "",
        owner_id: str | None = None,
    ) -> Pipeline:
        """Save a named pipeline; 409 `PIPELINE_EXISTS` if its owner already has the name."""
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > PIPELINE_NAME_LENGTH:
            raise _invalid("name", f"must be 1 to {PIPELINE_NAME_LENGTH} characters")
        if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
            raise _invalid("steps", "must be a non-empty list")
        steps_json = _json_value(builtins.list(steps), "steps")
        now = self._now()
        exists = ConflictError(
            f"a pipeline named {name!r} already exists",
            code="PIPELINE_EXISTS",
            details={"name": name},
        )
        with self._write() as session:
            duplicate = session.scalar(
                select(Pipeline.id).where(_owned_by(owner_id), Pipeline.name == name)
            )
            if duplicate is not None:
                raise exists
            pipeline = Pipeline(
                id=new_id(),
                owner_id=owner_id,
                name=name,
                description=description or "",
                steps=steps_json,
                created_at=now,
                updated_at=now,
            )
            session.add(pipeline)
            try:
                session.flush()
            except IntegrityError as error:  # a concurrent save of the same name won
                raise exists from error
        return pipeline

    def get_pipeline(
        self, pipeline_id: str, *, owner_id: str | None = None, all_owners: bool = False
    ) -> Pipeline:
        """The owner's pipeline (any owner's with `all_owners`); 404 otherwise."""
        with self._read() as session:
            return self._owned_pipeline(session, pipeline_id, owner_id, all_owners)

    def list_pipelines(
        self, *, owner_id: str | None = None, all_owners: bool = False
    ) -> builtins.list[Pipeline]:
        """The owner's pipelines by name (everyone's with `all_owners`, for admins)."""
        with self._read() as session:
            query = select(Pipeline).order_by(Pipeline.name, Pipeline.id)
            if not all_owners:
                query = query.where(_owned_by(owner_id))
            return builtins.list(session.scalars(query))

    def delete_pipeline(
        self, pipeline_id: str, *, owner_id: str | None = None, all_owners: bool = False
    ) -> None:
        """Delete the owner's pipeline; jobs that ran it keep their record (pipeline NULL)."""
        with self._write() as session:
            pipeline = self._owned_pipeline(session, pipeline_id, owner_id, all_owners)
            session.execute(delete(Pipeline).where(Pipeline.id == pipeline.id))

    def _owned_pipeline(
        self, session: Session, pipeline_id: str, owner_id: str | None, all_owners: bool
    ) -> Pipeline:
        pipeline = session.get(Pipeline, pipeline_id) if _ID.match(pipeline_id) else None
        if pipeline is None or (not all_owners and pipeline.owner_id != owner_id):
            # Someone else's pipeline is reported exactly like a missing one.
            raise _pipeline_not_found(pipeline_id)
        return pipeline


# ----- JSON shapes --------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with milliseconds and a `Z`, as the seeds write timestamps."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_dict(job: Job) -> dict[str, Any]:
    """The job as the API shows it (seed 000's job status, camelCase)."""
    duration_ms = None
    if job.started_at is not None and job.finished_at is not None:
        duration_ms = round((job.finished_at - job.started_at).total_seconds() * 1000)
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message}
    return {
        "id": job.id,
        "kind": str(job.kind),
        "status": str(job.status),
        "toolId": job.tool_id,
        "pipelineId": job.pipeline_id,
        "parentId": job.parent_id,
        "queue": job.queue,
        "progress": {
            "current": job.progress_current,
            "total": job.progress_total,
            "percent": round(job.progress * 100),
        },
        "message": job.message,
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "cancelRequested": job.cancel_requested,
        "settings": job.settings,
        "timings": {
            "createdAt": iso(job.created_at),
            "startedAt": iso(job.started_at),
            "finishedAt": iso(job.finished_at),
            "durationMs": duration_ms,
        },
        "inputs": {
            "count": len(job.inputs),
            "totalBytes": job.input_size,
            "files": [_file_dict(ref) for ref in job.inputs],
        },
        "results": {
            "count": len(job.outputs),
            "totalBytes": job.output_size,
            "files": [_file_dict(ref) for ref in job.outputs],
        },
        "result": job.result,
        "error": error,
    }


def event_to_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "jobId": event.job_id,
        "at": iso(event.at),
        "type": event.type,
        "status": str(event.status),
        "progress": event.progress,
        "message": event.message,
        "data": event.data,
    }


def pipeline_to_dict(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "id": pipeline.id,
        "name": pipeline.name,
        "description": pipeline.description,
        "steps": pipeline.steps,
        "ownerId": pipeline.owner_id,
        "createdAt": iso(pipeline.created_at),
        "updatedAt": iso(pipeline.updated_at),
    }


def _file_dict(ref: Mapping[str, Any]) -> dict[str, Any]:
    # The blob key is the storage's business; clients address files by job id and name.
    return {"filename": ref["filename"], "size": ref["size"], "format": ref.get("format")}


# ----- validation and helpers ---------------------------------------------------------------


def _job_not_found(job_id: str) -> NotFoundError:
    return NotFoundError("no such job", code="JOB_NOT_FOUND", details={"jobId": job_id})


def _pipeline_not_found(pipeline_id: str) -> NotFoundError:
    return NotFoundError(
        "no such pipeline", code="PIPELINE_NOT_FOUND", details={"pipelineId": pipeline_id}
    )


def _invalid(field: str, message: str) -> BadRequestError:
    return BadRequestError(
        f"{field} {message}", code="VALIDATION_ERROR", details={"fields": {field: [message]}}
    )


def _owned_by(owner_id: str | None) -> Any:
    return Pipeline.owner_id.is_(None) if owner_id is None else Pipeline.owner_id == owner_id


def _require_unfinished(job: Job) -> None:
    if job.status in FINAL_STATUSES:
        raise ConflictError(
            f"job is already {job.status}",
            code="JOB_FINISHED",
            details={"jobId": job.id, "status": str(job.status)},
        )


def _require_processing(job: Job, attempt: int | None) -> None:
    _require_unfinished(job)
    if job.status is not JobStatus.PROCESSING:
        raise ConflictError(
            f"job is {job.status}, not processing",
            code="JOB_NOT_RUNNING",
            details={"jobId": job.id, "status": str(job.status)},
        )
    _check_attempt(job, attempt)


def _check_attempt(job: Job, attempt: int | None) -> None:
    if attempt is not None and attempt != job.attempt:
        raise ConflictError(
            f"attempt {attempt} lost its lease; the job is on attempt {job.attempt}",
            code="LEASE_LOST",
            details={"jobId": job.id, "attempt": job.attempt},
        )


def _apply_progress(
    job: Job, progress: float | None, current: int | None, total: int | None
) -> None:
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise _invalid("total", "must be a non-negative integer")
        job.progress_total = total
    if current is not None:
        limit = job.progress_total
        if (
            isinstance(current, bool)
            or not isinstance(current, int)
            or current < 0
            or (limit is not None and current > limit)
        ):
            raise _invalid("current", "must be an integer between 0 and total")
        job.progress_current = current
        if progress is None and limit:
            progress = current / limit
    if progress is not None:
        if not isinstance(progress, int | float) or not math.isfinite(progress):
            raise _invalid("progress", "must be a number between 0 and 1")
        if not 0.0 <= progress <= 1.0:
            raise _invalid("progress", "must be a number between 0 and 1")
        job.progress = float(progress)


def _enum(enum: type[_E], value: Any, field: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise _invalid(field, f"must be one of: {allowed}") from None


def _enum_set(enum: type[_E], value: Any, field: str) -> builtins.list[_E]:
    values = [value] if isinstance(value, str) else builtins.list(value)
    if not values:
        raise _invalid(field, "must name at least one value")
    return [_enum(enum, v, field) for v in values]


def _blob_refs(refs: Sequence[Mapping[str, Any]], what: str) -> builtins.list[BlobRef]:
    """Checked copies of blob references: {key, filename, size, format}."""
    if isinstance(refs, str | bytes) or not isinstance(refs, Sequence):
        raise TypeError(f"{what} must be a list of blob references")
    checked: builtins.list[BlobRef] = []
    for ref in refs:
        if not isinstance(ref, Mapping):
            raise TypeError(f"{what}: each blob reference is a mapping, got {ref!r}")
        key, filename, size = ref.get("key"), ref.get("filename"), ref.get("size")
        fmt = ref.get("format")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{what}: blob reference without a key: {ref!r}")
        if not isinstance(filename, str) or not filename:
            raise ValueError(f"{what}: blob reference without a filename: {ref!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{what}: blob reference without a valid size: {ref!r}")
        if fmt is not None and not isinstance(fmt, str):
            raise ValueError(f"{what}: blob format must be a string or None: {ref!r}")
        checked.append({"key": key, "filename": filename, "size": size, "format": fmt})
    return checked


def _total_size(refs: Sequence[BlobRef]) -> int:
    return sum(ref["size"] for ref in refs)


_J = TypeVar("_J")


def _json_value(value: _J, what: str) -> _J:
    """`value` if it reads back from either database exactly as given; ValueError otherwise.

    Strict JSON only: string keys (json would turn `1` into `"1"`), lists rather than tuples,
    finite numbers (SQLite would store NaN, PostgreSQL refuses it).
    """
    _check_json(value, what)
    return value


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: key {key!r} is not a string")
            _check_json(item, f"{path}.{key}")
        return
    raise ValueError(f"{path}: {type(value).__name__} is not JSON")
