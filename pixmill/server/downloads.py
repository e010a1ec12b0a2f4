"""`GET /api/v1/download/<jobId>/<filename>`: the stored result of a tool call."""

from __future__ import annotations

import mimetypes
from typing import Any

from flask import Blueprint, Response, send_file

from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.core.errors import NotFoundError
from pixmill.server.state import get_state

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/download")

mimetypes.add_type("image/avif", ".avif")
mimetypes.add_type("image/heic", ".heic")
mimetypes.add_type("image/heif", ".heif")
mimetypes.add_type("image/webp", ".webp")


@bp.get("/<job_id>/<filename>")
def download(job_id: str, filename: str) -> Response:
    state = get_state()
    blobs = state.blobs
    # The job row says which attempt's files are the outputs: a retried job's earlier
    # attempts (or a worker that lost its lease) can never be served by mistake.
    try:
        outputs = state.jobs.get(job_id).outputs or []
    except NotFoundError:
        # No row: an inline result whose record could not be written (the answer had
        # already been produced); inline calls have exactly one attempt. Invalid ids and
        # names are refused by BlobKey itself, as a plain 404.
        outputs = [{"filename": filename, "key": BlobKey.result(job_id, 1, filename).relative_path}]
    ref = next((ref for ref in outputs if ref.get("filename") == filename), None)
    if ref is None:
        raise NotFoundError("no such result file", code="FILE_NOT_FOUND")
    key = BlobKey.parse(ref["key"])
    if isinstance(blobs, LocalBlobStore):  # let the server send the file from disk
        source: Any = blobs.path(key)
        etag: bool | str = True
    else:
        source = blobs.open(key)
        etag = f"{job_id}-{key.attempt}-{blobs.size(key)}"
    response = send_file(source, conditional=True, etag=etag, max_age=3600, download_name=filename)
    # Results are served from the API's origin: an SVG (vectorize) must not run script there.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
