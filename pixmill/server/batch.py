"""Batch calls: `POST /api/v1/tools/<section>/<toolId>/batch`, many files in, one ZIP out.

The request is a tool call with repeated `files` parts (or repeated `file` parts, seed 003
accepts both names) instead of one `file`, plus the tool's other parts (e.g. `watermark`,
shared by every file) and `settings`. `pixmill.core.batch` checks and submits it: one job per
file, spread over the workers, and a batch job that builds the ZIP once they have all ended.

The answer, as seed 003 describes it: the ZIP itself (`application/zip`, an attachment,
`X-Job-Id` naming the batch job), once the batch has finished. A batch still running after
`WAIT_TIMEOUT_S`, or any batch called with `?async=true`, answers the 202 form of queued
work instead; its ZIP is then the batch job's result, at `/api/v1/download/<jobId>/<name>`
and in `GET /api/v1/jobs/<jobId>/results`.

`archive_or_accepted` is the same answer for any batch job (`/pipeline/batch` uses it).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, send_file

from pixmill.core.batch import submit_batch
from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.errors import BadRequestError
from pixmill.core.execution import UploadedFile
from pixmill.core.models import Job, JobStatus
from pixmill.server.errors import error_response
from pixmill.server.state import AppState, get_state
from pixmill.server.tools import (
    accepted_response,
    async_requested,
    settings_from_request,
    uploaded_files,
)

bp = Blueprint("batch", __name__, url_prefix="/api/v1/tools")

# The part names a batch's own files may come in; any other file part is the tool's own.
MEMBER_PARTS = ("files", "file")
ARCHIVE_TYPE = "application/zip"


@bp.post("/<section>/<tool_id>/batch")
def run_batch(section: str, tool_id: str) -> Response:
    state = get_state()
    definition = state.registry.catalogue_entry(tool_id, section)
    forced = async_requested()
    members, shared = batch_files(uploaded_files())
    raw_settings = settings_from_request()
    batch = submit_batch(state.dispatcher, definition, members, raw_settings, shared_files=shared)
    if forced:
        return accepted_response(batch.id, str(batch.status))
    return archive_or_accepted(state, batch.id)


def batch_files(
    files: dict[str, list[UploadedFile]],
) -> tuple[list[UploadedFile], dict[str, list[UploadedFile]]]:
    """The batch's own files in request order, and the other file parts (shared by all).

    Both `files` and `file` are accepted, but not together: the form parser keeps the order
    within one name only, so a mix could not come back in the order it was sent.
    """
    named = [part for part in MEMBER_PARTS if files.get(part)]
    if len(named) > 1:
        raise BadRequestError(
            "send a batch's files all as `files` parts (or all as `file` parts), not both: "
            "their order across the two names is lost",
            code="MIXED_FILE_PARTS",
            details={"fields": {part: ["used together"] for part in named}},
        )
    members = list(files[named[0]]) if named else []
    shared = {part: uploads for part, uploads in files.items() if part not in MEMBER_PARTS}
    return members, shared


def archive_or_accepted(state: AppState, job_id: str) -> Response:
    """Wait up to `WAIT_TIMEOUT_S` for the batch job, then stream its ZIP; 202 if it is
    still running by then (its ZIP is downloadable once it has finished)."""
    job = state.jobs.wait_until_final(job_id, state.config.wait_timeout_s)
    if not job.is_final:
        return accepted_response(job.id, str(job.status))
    return archive_response(state, job)


def archive_response(state: AppState, job: Job) -> Response:
    """The finished batch's ZIP as an attachment; its error if it did not complete (409
    JOB_CANCELLED; a failed batch answers 500 with its own code). `X-Job-Id` on all three."""
    if job.status is JobStatus.COMPLETED and job.outputs:
        ref = job.outputs[0]
        key = BlobKey.parse(ref["key"])
        blobs = state.blobs
        # A local file is sent by the server from disk, in pieces, never read into memory.
        source: Any = blobs.path(key) if isinstance(blobs, LocalBlobStore) else blobs.open(key)
        response = send_file(source, mimetype=ARCHIVE_TYPE, conditional=False)
        response.headers["Content-Disposition"] = f'attachment; filename="{ref["filename"]}"'
    elif job.status is JobStatus.CANCELLED:
        response = error_response(
            409, "JOB_CANCELLED", "the batch was cancelled before it finished", {"jobId": job.id}
        )
    else:
        # Members failing never fail the batch (the manifest reports them): this is the
        # batch's own work failing past its retries, a server-side problem.
        response = error_response(
            500,
            job.error_code or "BATCH_FAILED",
            job.error_message or "the batch did not produce its archive",
            {"jobId": job.id},
        )
    response.headers["X-Job-Id"] = job.id
    return response
