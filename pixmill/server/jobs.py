"""The jobs resource (seed 000's job status, results and cancel) and the record of inline calls.

    GET    /api/v1/jobs                  newest first; page, limit, status, kind, tool, from, to
    GET    /api/v1/jobs/<id>             the job: progress, timings, inputs and results summary
    GET    /api/v1/jobs/<id>/results     output files with download URLs, or the extracted JSON
    POST   /api/v1/jobs/<id>/cancel      queued: cancelled, 200; processing: cancel requested,
                                         202 (the worker stops at its next check); finished: 409
    DELETE /api/v1/jobs/<id>             the record and its blobs; a processing job is asked to
                                         cancel and refused with 409 JOB_RUNNING until it stopped

Every state change goes through the `JobStore`, which checks it against the row as it is at
that moment. Ids that are not job ids at all are answered exactly like unknown ones (404
JOB_NOT_FOUND). Query parameters are checked strictly: an unknown, repeated or malformed one
is a 400 VALIDATION_ERROR naming it, never silently ignored (a mistyped filter would
otherwise list everything).

`record_inline` writes the row of a tool call that ran inline in the web process: one short
transaction with two inserts (the completed job and its event), no read, no row lock.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import Insert, insert

from pixmill.core.blobs import BlobKey, InvalidBlobKeyError, is_valid_job_id, safe_filename
from pixmill.core.contracts import ID_PATTERN, Extractor, Tool
from pixmill.core.db import SQLITE_BEGIN_IMMEDIATE, Database
from pixmill.core.errors import BadRequestError, ConflictError, NotFoundError, PixmillError
from pixmill.core.execution import Outcome, UploadedFile
from pixmill.core.imageio import sniff_format
from pixmill.core.jobstore import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, JobPage, JobStore, to_dict
from pixmill.core.models import (
    TOOL_ID_LENGTH,
    BlobRef,
    Job,
    JobEvent,
    JobKind,
    JobStatus,
)
from pixmill.server.state import AppState, get_state

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

# Far beyond any real listing; it keeps OFFSET arithmetic small and the 400 predictable.
MAX_PAGE = 1_000_000
# Inline calls never pass through a queue; the name tells them apart in listings.
INLINE_QUEUE = "inline"
_INTEGER = re.compile(r"0|[1-9][0-9]{0,8}")
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_E = TypeVar("_E", JobStatus, JobKind)


# ----- query parameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class ListingQuery:
    """The checked query of a job listing (shared by /jobs and /history)."""

    page: int = 1
    limit: int = DEFAULT_PAGE_LIMIT
    status: list[JobStatus] | None = None
    kind: list[JobKind] | None = None
    tool_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # None: top-level jobs only; a job id: the jobs of that batch or pipeline.
    parent_id: str | None = None


class QueryErrors:
    """Collects every bad query parameter, so one 400 names them all."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.fields:
            summary = "; ".join(f"{name}: {messages[0]}" for name, messages in self.fields.items())
            raise BadRequestError(
                f"invalid query: {summary}",
                code="VALIDATION_ERROR",
                details={"fields": self.fields},
            )


def query_args(accepted: Collection[str], errors: QueryErrors) -> dict[str, str]:
    """The request's query parameters, each given at most once and known to the route."""
    args: dict[str, str] = {}
    for name in request.args:
        values = request.args.getlist(name)
        if name not in accepted:
            errors.add(name, f"unknown query parameter; accepted: {', '.join(sorted(accepted))}")
        elif len(values) > 1:
            errors.add(name, "given more than once")
        else:
            args[name] = values[0]
    return args


def parse_int(
    args: Mapping[str, str], name: str, default: int, low: int, high: int, errors: QueryErrors
) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        errors.add(name, f"must be an integer between {low} and {high}")
        return default
    return int(raw)


def parse_enums(
    args: Mapping[str, str],
    name: str,
    enum: type[_E],
    errors: QueryErrors,
    allowed: Collection[_E] | None = None,
) -> list[_E] | None:
    """A comma-separated list of enum values (`status=failed,cancelled`)."""
    raw = args.get(name)
    if raw is None:
        return None
    choices = [member for member in enum if allowed is None or member in allowed]
    values: list[_E] = []
    for part in raw.split(","):
        match = next((member for member in choices if member.value == part), None)
        if match is None:
            errors.add(name, f"must be one or more of: {', '.join(m.value for m in choices)}")
            return None
        values.append(match)
    return values


def parse_tool_id(args: Mapping[str, str], name: str, errors: QueryErrors) -> str | None:
    raw = args.get(name)
    if raw is None:
        return None
    if len(raw) > TOOL_ID_LENGTH or not ID_PATTERN.fullmatch(raw):
        errors.add(name, "must be a tool id: lowercase letters and digits joined by hyphens")
        return None
    return raw


def parse_instant(
    args: Mapping[str, str], name: str, errors: QueryErrors, *, end_of_day: bool
) -> datetime | None:
    """An ISO 8601 date or date-time, in UTC. Without an offset it is read as UTC; a bare date
    means the start of that day, or its end when it closes a range (`to=2024-01-25` includes
    all of the 25th)."""
    raw = args.get(name)
    if raw is None:
        return None
    try:
        if _DATE_ONLY.fullmatch(raw):
            day = date.fromisoformat(raw)
            return datetime.combine(day, time.max if end_of_day else time.min, UTC)
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        # Converted here, where an offset that leaves the calendar's range is a 400.
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        errors.add(name, "must be an ISO 8601 date or date-time, e.g. 2024-01-25T10:30:00Z")
        return None


def check_range(query: ListingQuery, errors: QueryErrors) -> None:
    if query.created_from and query.created_to and query.created_from > query.created_to:
        errors.add("from", "must not be after to")


LISTING_PARAMS = ("page", "limit")
JOB_FILTER_PARAMS = ("status", "kind", "tool", "from", "to", "parent")


def _jobs_query() -> ListingQuery:
    errors = QueryErrors()
    args = query_args((*LISTING_PARAMS, *JOB_FILTER_PARAMS), errors)
    query = parse_listing(args, errors)
    check_range(query, errors)
    errors.raise_if_any()
    return query


def parse_listing(args: Mapping[str, str], errors: QueryErrors) -> ListingQuery:
    """A job listing's query from its parameters (REST query or CLI options, by their REST
    names); problems are added to `errors`, the caller decides how to report them."""
    return ListingQuery(
        page=parse_int(args, "page", 1, 1, MAX_PAGE, errors),
        limit=parse_int(args, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT, errors),
        status=parse_enums(args, "status", JobStatus, errors),
        kind=parse_enums(args, "kind", JobKind, errors),
        tool_id=parse_tool_id(args, "tool", errors),
        created_from=parse_instant(args, "from", errors, end_of_day=False),
        created_to=parse_instant(args, "to", errors, end_of_day=True),
        parent_id=parse_job_id(args, "parent", errors),
    )


def parse_job_id(args: Mapping[str, str], name: str, errors: QueryErrors) -> str | None:
    raw = args.get(name)
    if raw is not None and not is_valid_job_id(raw):
        errors.add(name, "must be a job id (32 lowercase hex characters)")
        return None
    return raw


def list_jobs_page(jobs: JobStore, query: ListingQuery) -> JobPage:
    """One page of a listing: top-level jobs unless the query names a parent."""
    return jobs.list(
        status=query.status,
        kind=query.kind,
        tool_id=query.tool_id,
        created_from=query.created_from,
        created_to=query.created_to,
        parent_id=query.parent_id,
        top_level=query.parent_id is None,
        page=query.page,
        limit=query.limit,
    )


def pagination(page: JobPage) -> dict[str, Any]:
    return {
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "pages": math.ceil(page.total / page.limit),
        "hasMore": page.has_more,
    }


# ----- shapes -------------------------------------------------------------------------------


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.show_job", job_id=job_id),
        "results": url_for("jobs.job_results", job_id=job_id),
        "cancel": url_for("jobs.cancel_job", job_id=job_id),
        "progress": url_for("progress.job_progress", job_id=job_id),
    }


def job_dict(job: Job) -> dict[str, Any]:
    return to_dict(job) | {"links": job_links(job.id)}


def output_files(state: AppState, job: Job) -> list[dict[str, Any]]:
    """The job's outputs with their download URLs; a file no longer stored (expired, or an
    inline result that was sent in the response and never kept) has `downloadUrl` null."""
    if not job.outputs:
        return []
    # The download route serves the promoted attempt's files (attempt 1 for inline calls).
    attempt = state.blobs.promoted_attempt(job.id) or 1
    files = []
    for ref in job.outputs:
        filename = ref["filename"]
        try:
            available = state.blobs.exists(BlobKey.result(job.id, attempt, filename))
        except InvalidBlobKeyError:
            available = False
        url = url_for("downloads.download", job_id=job.id, filename=filename)
        files.append(
            {
                "filename": filename,
                "size": ref["size"],
                "format": ref.get("format"),
                "downloadUrl": url if available else None,
                "available": available,
            }
        )
    return files


def duration_ms(job: Job) -> int | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return round((job.finished_at - job.started_at).total_seconds() * 1000)


def job_error(job: Job) -> dict[str, Any] | None:
    if job.error_code is None:
        return None
    return {"code": job.error_code, "message": job.error_message}


def not_found(job_id: str) -> NotFoundError:
    return NotFoundError("no such job", code="JOB_NOT_FOUND", details={"jobId": job_id})


# ----- routes -------------------------------------------------------------------------------


@bp.get("")
def list_jobs() -> Response:
    page = list_jobs_page(get_state().jobs, _jobs_query())
    return jsonify({"jobs": [job_dict(job) for job in page.items], "pagination": pagination(page)})


@bp.get("/<job_id>")
def show_job(job_id: str) -> Response:
    return jsonify(job_dict(get_state().jobs.get(job_id)))


@bp.get("/<job_id>/results")
def job_results(job_id: str) -> Response:
    state = get_state()
    job = state.jobs.get(job_id)
    if not job.is_final:
        raise ConflictError(
            f"job is {job.status}; results are ready once it has finished",
            code="JOB_NOT_FINISHED",
            details={"jobId": job.id, "status": str(job.status)},
        )
    return jsonify(
        {
            "jobId": job.id,
            "status": str(job.status),
            "kind": str(job.kind),
            "toolId": job.tool_id,
            "summary": {
                "files": len(job.outputs),
                "totalBytes": job.output_size,
                "inputBytes": job.input_size,
                "durationMs": duration_ms(job),
            },
            "files": output_files(state, job),
            "result": job.result,
            "error": job_error(job),
        }
    )


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    # Queued: cancelled in the same transaction, so no worker can claim it afterwards.
    # Processing: the flag is set; the worker sees it at its next progress report or
    # cancellation check and confirms. Finished: the store answers 409 JOB_FINISHED.
    job = get_state().dispatcher.cancel(job_id)
    if job.status is JobStatus.CANCELLED:
        return jsonify({"success": True, "message": "job cancelled", "job": job_dict(job)})
    response = jsonify(
        {
            "success": True,
            "message": "cancel requested; the job stops at its next cancellation check",
            "job": job_dict(job),
        }
    )
    response.status_code = 202
    return response


@bp.delete("/<job_id>")
def delete_job(job_id: str) -> Response:
    delete_job_and_blobs(get_state(), job_id)
    return jsonify({"success": True, "message": "job deleted", "jobId": job_id})


def delete_job_and_blobs(state: AppState, job_id: str) -> None:
    """Delete a job's record (with its events and child jobs), then every blob of them.

    An unfinished job is cancelled first: a queued one is then final and deleted; a
    processing one only gets the cancel request and a 409 JOB_RUNNING, because its worker
    is still writing results (delete it again once it has stopped). The row goes before the
    blobs: if deleting a blob fails, what is left is an unreferenced file the retention
    purge removes, never a record pointing at nothing.
    """
    job = state.jobs.get(job_id)
    if not job.is_final:
        try:
            job = state.dispatcher.cancel(job_id)
        except ConflictError as error:
            if error.code != "JOB_FINISHED":  # it finished meanwhile: delete it as it is
                raise
        else:
            if job.status is JobStatus.PROCESSING:
                raise ConflictError(
                    "the job is running; cancellation was requested, delete it once it has stopped",
                    code="JOB_RUNNING",
                    details={"jobId": job.id, "status": str(job.status), "cancelRequested": True},
                )
    refs = state.jobs.delete(job_id)
    job_ids = {job_id}
    for ref in refs:
        # Keys are `<area>/<jobId>/...` (BlobKey.relative_path); child jobs own their blobs.
        parts = ref["key"].split("/")
        if len(parts) > 1 and is_valid_job_id(parts[1]):
            job_ids.add(parts[1])
    for owner in sorted(job_ids):
        try:
            state.blobs.delete_job(owner)
        except OSError:
            log.exception("could not delete the blobs of job %s", owner)


# ----- recording inline calls ---------------------------------------------------------------


def record_inline(
    db: Database,
    *,
    job_id: str,
    definition: Tool | Extractor,
    settings: Mapping[str, Any],
    files: Mapping[str, Sequence[UploadedFile]],
    outcome: Outcome,
    output: BlobRef | None,
    started_at: datetime,
    finished_at: datetime,
) -> None:
    """Write the completed job of a tool call that ran inline: one transaction, two inserts.

    Inline inputs are not kept (they were in the request body only); their references carry
    name, size and format, and the upload key they would have had, which reads as
    FILE_NOT_FOUND like an expired file. `output` is the result's reference; its blob exists
    when the JSON envelope was answered, not when the bytes went back in the response.
    """
    inputs: list[BlobRef] = []
    for part, uploads in files.items():
        for data, filename in uploads:
            name = safe_filename(filename, fallback=part)
            inputs.append(
                {
                    "key": BlobKey.upload(job_id, name).relative_path,
                    "filename": name,
                    "size": len(data),
                    "format": _format_name(data),
                }
            )
    outputs = [output] if output is not None else []
    # A JSON tool's result, or the facts an image tool reported about its file (`meta`).
    facts = outcome.json if outcome.json is not None else outcome.meta
    result = _strict_json(facts) if facts is not None else None
    job_row = {
        "id": job_id,
        "kind": JobKind.EXTRACT if isinstance(definition, Extractor) else JobKind.TOOL,
        "tool_id": definition.id,
        "status": JobStatus.COMPLETED,
        "progress": 1.0,
        "attempt": 1,
        "max_attempts": 1,
        "queue": INLINE_QUEUE,
        "cancel_requested": False,
        "settings": dict(settings),
        "inputs": inputs,
        "outputs": outputs,
        "result": result,
        "input_size": outcome.input_size,
        "output_size": sum(ref["size"] for ref in outputs),
        "created_at": started_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "updated_at": finished_at,
    }
    event_row = {
        "job_id": job_id,
        "at": finished_at,
        "type": "completed",
        "status": JobStatus.COMPLETED,
        "progress": 1.0,
        "data": {"inline": True, "files": len(outputs), "bytes": job_row["output_size"]},
    }
    # Core inserts rather than the ORM's unit of work: this runs on every tool call.
    insert_job, insert_event = _inserts()
    with db.engine.connect() as connection:
        connection.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        with connection.begin():
            connection.execute(insert_job, job_row)
            connection.execute(insert_event, event_row)


@functools.cache
def _inserts() -> tuple[Insert, Insert]:
    return insert(Job), insert(JobEvent)


def _format_name(data: bytes) -> str | None:
    try:
        return sniff_format(data).name
    except PixmillError:  # not an image the server knows: recorded without a format
        return None


def _strict_json(value: Any) -> dict[str, Any] | None:
    """`value` as both databases store it (tuples as lists), or None if it is not JSON
    (NaN would be refused by PostgreSQL and the whole record lost)."""
    try:
        loaded = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
