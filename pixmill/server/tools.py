"""The tools resource: the catalogue, one tool's description, and calling a tool.

`POST /api/v1/tools/<section>/<toolId>` takes multipart `file` (plus the named extra files a
tool declares) and `settings` (a JSON object as text). Image results answer with the seed's
JSON envelope, or with the bytes themselves when the client's Accept prefers the image type.
Extractors answer with their JSON object as the body.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from pixmill.core.blobs import BlobKey
from pixmill.core.catalogue import describe
from pixmill.core.contracts import OutputKind
from pixmill.core.errors import BadRequestError, PixmillError, SettingsError
from pixmill.core.execution import Outcome, UploadedFile, execute
from pixmill.core.models import new_id
from pixmill.core.settings import parse_settings_json
from pixmill.server.state import get_state

bp = Blueprint("tools", __name__, url_prefix="/api/v1/tools")

SETTINGS_FIELD = "settings"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@bp.get("")
def list_tools() -> Response:
    catalogue = get_state().registry.catalogue()
    return jsonify({"tools": [describe(item) for item in catalogue], "total": len(catalogue)})


@bp.get("/<section>/<tool_id>")
def show_tool(section: str, tool_id: str) -> Response:
    return jsonify(describe(get_state().registry.catalogue_entry(tool_id, section)))


@bp.post("/<section>/<tool_id>")
def run_tool(section: str, tool_id: str) -> Response:
    state = get_state()
    definition = state.registry.catalogue_entry(tool_id, section)
    outcome = execute(
        definition,
        _uploaded_files(),
        _settings_from_request(),
        limits=state.config.limits,
        config=state.config.plugin_config(),
        models=state.models,
    )
    if outcome.kind is OutputKind.JSON:
        return jsonify(outcome.json)
    return _image_response(outcome)


def _settings_from_request() -> Any:
    """Settings from the multipart `settings` field, or the whole body when it is JSON."""
    if request.is_json:
        body = request.get_json(silent=True)
        if body is None and request.content_length:
            raise SettingsError(
                "the JSON body is not valid JSON",
                details={"fields": {"_schema": ["not valid JSON"]}},
            )
        return body
    if request.mimetype not in FORM_TYPES and request.content_length:
        raise PixmillError(
            f"tool calls take multipart/form-data (a file part and a settings field), not "
            f"{request.mimetype or 'an untyped body'}",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    # A part whose name cannot be parsed comes back as None: report it, never compare it.
    unexpected = sorted(str(name) for name in set(request.form) - {SETTINGS_FIELD})
    if unexpected:
        raise BadRequestError(
            f"unexpected form field(s) {', '.join(unexpected)}; send settings as one JSON "
            f"object in the {SETTINGS_FIELD!r} field",
            code="UNEXPECTED_FIELD",
            details={"unexpected": unexpected},
        )
    return parse_settings_json(request.form.get(SETTINGS_FIELD))


def _uploaded_files() -> dict[str, list[UploadedFile]]:
    files: dict[str, list[UploadedFile]] = defaultdict(list)
    for name, storage in request.files.items(multi=True):
        stream = storage.stream
        # Uploads are parsed into BytesIO (see PixmillRequest): getvalue() hands over its
        # buffer without copying a multi-megabyte file once more.
        data = stream.getvalue() if isinstance(stream, io.BytesIO) else storage.read()
        files[name].append((data, storage.filename or name))
    return files


def _prefers_image(media_type: str) -> bool:
    accept = request.accept_mimetypes
    if not accept:
        return False
    # Ties (e.g. */*) go to JSON: only an explicit preference returns raw bytes.
    return accept.best_match(["application/json", media_type]) == media_type and accept.quality(
        media_type
    ) > accept.quality("application/json")


def _image_response(outcome: Outcome) -> Response:
    assert outcome.data is not None and outcome.format is not None and outcome.filename
    job_id = new_id()
    if _prefers_image(outcome.format.media_type):
        response = Response(outcome.data, mimetype=outcome.format.media_type)
        response.headers["ETag"] = (
            '"' + hashlib.blake2b(outcome.data, digest_size=16).hexdigest() + '"'
        )
        response.headers["Content-Disposition"] = f'inline; filename="{outcome.filename}"'
        response.headers["X-Job-Id"] = job_id
        response.headers["X-Original-Size"] = str(outcome.input_size)
        return response
    # An inline call has one attempt; the download route falls back to attempt 1.
    get_state().blobs.put(BlobKey.result(job_id, 1, outcome.filename), outcome.data)
    return jsonify(
        {
            "jobId": job_id,
            "downloadUrl": url_for("downloads.download", job_id=job_id, filename=outcome.filename),
            "originalSize": outcome.input_size,
            "processedSize": outcome.size,
        }
    )
