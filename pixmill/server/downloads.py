"""`GET /api/v1/download/<jobId>/<filename>`: the stored result of a tool call."""

from __future__ import annotations

import mimetypes
from typing import Any

from flask import Blueprint, Response, send_file

from pixmill.core.blobs import BlobKey, LocalBlobStore
from pixmill.server.state import get_state

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/download")

mimetypes.add_type("image/avif", ".avif")
mimetypes.add_type("image/heic", ".heic")
mimetypes.add_type("image/heif", ".heif")
mimetypes.add_type("image/webp", ".webp")


@bp.get("/<job_id>/<filename>")
def download(job_id: str, filename: str) -> Response:
    blobs = get_state().blobs
    # Invalid ids and names are refused by BlobKey itself, as a plain 404.
    key = BlobKey.result(job_id, blobs.promoted_attempt(job_id) or 1, filename)
    if isinstance(blobs, LocalBlobStore):  # let the server send the file from disk
        source: Any = blobs.path(key)
        etag: bool | str = True
    else:
        source = blobs.open(key)
        etag = f"{job_id}-{key.attempt}-{blobs.size(key)}"
    return send_file(source, conditional=True, etag=etag, max_age=3600, download_name=filename)
