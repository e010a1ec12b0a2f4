"""The history resource (seed 001): finished jobs with the parameters they ran with and what
they produced, newest first.

    GET    /api/v1/history          page, limit, type (a tool id, or a job kind such as
                                    `pipeline`), status (completed, failed, cancelled), from, to
    GET    /api/v1/history/<id>     one entry
    DELETE /api/v1/history/<id>     the job's record and files, as DELETE /api/v1/jobs/<id>

History is a view of the job records, not a second store: an entry is a job in a final state.
A job that is still queued or processing is not in the history (404 here; see /api/v1/jobs).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, url_for

from pixmill.core.contracts import ID_PATTERN
from pixmill.core.errors import NotFoundError
from pixmill.core.jobstore import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, iso
from pixmill.core.models import FINAL_STATUSES, TOOL_ID_LENGTH, Job, JobKind, JobStatus
from pixmill.server.jobs import (
    LISTING_PARAMS,
    MAX_PAGE,
    ListingQuery,
    QueryErrors,
    check_range,
    delete_job_and_blobs,
    duration_ms,
    job_error,
    list_jobs_page,
    output_files,
    pagination,
    parse_enums,
    parse_instant,
    parse_int,
    query_args,
)
from pixmill.server.state import AppState, get_state

bp = Blueprint("history", __name__, url_prefix="/api/v1/history")

HISTORY_FILTER_PARAMS = ("type", "status", "from", "to")
_KINDS = {kind.value: kind for kind in JobKind}


def _history_query() -> ListingQuery:
    errors = QueryErrors()
    args = query_args((*LISTING_PARAMS, *HISTORY_FILTER_PARAMS), errors)
    kind: list[JobKind] | None = None
    tool_id: str | None = None
    type_ = args.get("type")
    if type_ is not None:
        # A kind names every job of that kind; anything else must be a tool id.
        if type_ in _KINDS:
            kind = [_KINDS[type_]]
        elif len(type_) <= TOOL_ID_LENGTH and ID_PATTERN.fullmatch(type_):
            tool_id = type_
        else:
            errors.add("type", f"must be a tool id or one of: {', '.join(_KINDS)}")
    status = parse_enums(args, "status", JobStatus, errors, allowed=FINAL_STATUSES)
    query = ListingQuery(
        page=parse_int(args, "page", 1, 1, MAX_PAGE, errors),
        limit=parse_int(args, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT, errors),
        status=status or sorted(FINAL_STATUSES),
        kind=kind,
        tool_id=tool_id,
        created_from=parse_instant(args, "from", errors, end_of_day=False),
        created_to=parse_instant(args, "to", errors, end_of_day=True),
    )
    check_range(query, errors)
    errors.raise_if_any()
    return query


def history_entry(state: AppState, job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.tool_id or str(job.kind),
        "kind": str(job.kind),
        "toolId": job.tool_id,
        "pipelineId": job.pipeline_id,
        "status": str(job.status),
        "parameters": job.settings,
        "inputs": {
            "count": len(job.inputs),
            "totalBytes": job.input_size,
            "files": [
                {"filename": ref["filename"], "size": ref["size"], "format": ref.get("format")}
                for ref in job.inputs
            ],
        },
        "outputs": output_files(state, job),
        "outputBytes": job.output_size,
        "result": job.result,
        "error": job_error(job),
        "createdAt": iso(job.created_at),
        "finishedAt": iso(job.finished_at),
        "durationMs": duration_ms(job),
        "links": {
            "self": url_for("history.show_entry", job_id=job.id),
            "job": url_for("jobs.show_job", job_id=job.id),
        },
    }


def _finished_job(state: AppState, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if not job.is_final:
        raise NotFoundError(
            f"no finished job with this id (it is {job.status}; see /api/v1/jobs/{job.id})",
            code="JOB_NOT_FOUND",
            details={"jobId": job.id, "status": str(job.status)},
        )
    return job


@bp.get("")
def list_history() -> Response:
    state = get_state()
    page = list_jobs_page(state.jobs, _history_query())
    return jsonify(
        {
            "history": [history_entry(state, job) for job in page.items],
            "pagination": pagination(page),
        }
    )


@bp.get("/<job_id>")
def show_entry(job_id: str) -> Response:
    state = get_state()
    return jsonify(history_entry(state, _finished_job(state, job_id)))


@bp.delete("/<job_id>")
def delete_entry(job_id: str) -> Response:
    state = get_state()
    job = _finished_job(state, job_id)
    delete_job_and_blobs(state, job.id)
    return jsonify({"success": True, "message": "history entry deleted", "jobId": job.id})
