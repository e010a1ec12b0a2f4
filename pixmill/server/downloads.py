"""`GET /api/v1/download/<jobId>/<filename>`: the stored result of a tool call."""

from __future__ import annotations

import mimetypes

from flask import Blueprint, Response, send_file

from pixmill.server.state import get_state

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/download")

mimetypes.add_type("image/avif", ".avif")
mimetypes.add_type("image/heic", ".heic")
mimetypes.add_type("image/heif", ".heif")
mimetypes.add_type("image/webp", ".webp")


@bp.get("/<job_id>/<filename>")
def download(job_id: str, filename: str) -> Response:
    path = get_state().results.path(job_id, filename)
    return send_file(path, conditional=True, etag=True, max_age=3600, download_name=filename)
