"""The tools resource: the catalogue, one tool's description, and calling a tool.

`POST /api/v1/tools/<section>/<toolId>` takes multipart `file` (plus the named extra files a
tool declares) and `settings` (a JSON object as text). Image results answer with the seed's
JSON envelope, or with the bytes themselves when the client's Accept prefers the image type.
Extractors answer with their JSON object as the body.

A call is read and checked whole (files, then settings, normalized through the tool's schema)
before any work, so a refused request never costs a run and is never recorded. A call that
ran inline is recorded afterwards as a completed job (`jobs.record_inline`), and its id is in
the `X-Job-Id` header of every answer, so the call appears in /api/v1/jobs and
/api/v1/history. A call the tool itself refused or failed (400, 413, 415, 422, 500 from
`execute`) is not recorded: nothing was produced, the client already has the error, and a
flood of bad uploads must not turn into a flood of database writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from pixmill.core.blobs import BlobKey
from pixmill.core.catalogue import check_available, describe
from pixmill.core.contracts import Extractor, OutputKind, Tool
from pixmill.core.errors import BadRequestError, PixmillError, SettingsError
from pixmill.core.execution import Outcome, UploadedFile, execute
from pixmill.core.models import BlobRef, new_id, utcnow
from pixmill.core.settings import normalized_settings, parse_settings_json, validate_settings
from pixmill.server.jobs import record_inline
from pixmill.server.state import AppState, get_state

log = logging.getLogger(__name__)

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


@dataclass
class ToolCall:
    """A checked request to run a tool: its files, its settings as sent, and those settings
    normalized (defaults filled in, wire form, plain JSON): what a job records."""

    definition: Tool | Extractor
    files: dict[str, list[UploadedFile]]
    raw_settings: Any
    settings: dict[str, Any]


@bp.post("/<section>/<tool_id>")
def run_tool(section: str, tool_id: str) -> Response:
    return _run(get_state().registry.catalogue_entry(tool_id, section))


class ActionConverter(BaseConverter):
    """A sub-route's action: any segment but `batch`, whose route takes POST only, so that
    GET is not advertised (`Allow`) there."""

    regex = r"(?!batch$)[^/]+"


@bp.record_once
def _register_converter(setup: BlueprintSetupState) -> None:
    # Before the routes below: they are added in the order they were recorded.
    setup.app.url_map.converters["action"] = ActionConverter


@bp.get("/<section>/<tool_id>/<action:action>")
def show_subroute(section: str, tool_id: str, action: str) -> Response:
    return jsonify(describe(get_state().registry.route_entry(f"{tool_id}/{action}", section)))


@bp.post("/<section>/<tool_id>/<action:action>")
def run_subroute(section: str, tool_id: str, action: str) -> Response:
    """A tool's sub-route (`edit-metadata/inspect`): a tool or extractor of its own."""
    return _run(get_state().registry.route_entry(f"{tool_id}/{action}", section))


def _run(definition: Tool | Extractor) -> Response:
    state = get_state()
    forced = async_requested()
    call = _read_call(definition)
    if forced or _belongs_on_queue(state, call):
        return _queue(state, call)
    return _run_inline(state, call)


ASYNC_ARG = "async"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def async_requested() -> bool:
    """`?async=true` forces the queued (202) form; `false` or absent leaves it to the server.
    Anything else is a 400 rather than a guess."""
    values = request.args.getlist(ASYNC_ARG)
    if not values:
        return False
    value = values[-1].strip().lower()
    if len(values) > 1 or value not in _TRUE | _FALSE:
        raise BadRequestError(
            f"query parameter {ASYNC_ARG!r} takes one value, true or false",
            code="VALIDATION_ERROR",
            details={"fields": {ASYNC_ARG: ["must be true or false"]}},
        )
    return value in _TRUE


def _belongs_on_queue(state: AppState, call: ToolCall) -> bool:
    """Heavy tools always go to the queue; others when their files are large."""
    if call.definition.heavy:
        return True
    total = sum(len(data) for parts in call.files.values() for data, _ in parts)
    return total > state.config.async_threshold_bytes


def _queue(state: AppState, call: ToolCall) -> Response:
    """Submit the checked call as a job and answer seed 003's `202 {"jobId","async":true}`."""
    job = state.dispatcher.submit_tool_job(call.definition, call.files, call.raw_settings)
    return accepted_response(job.id, str(job.status))


def accepted_response(job_id: str, status: str) -> Response:
    """The 202 answer of queued work, with where to follow it."""
    response = jsonify(
        {
            "jobId": job_id,
            "async": True,
            "status": status,
            "statusUrl": url_for("jobs.show_job", job_id=job_id),
            "progressUrl": url_for("progress.job_progress", job_id=job_id),
        }
    )
    response.status_code = 202
    response.headers["Location"] = url_for("jobs.show_job", job_id=job_id)
    response.headers["X-Job-Id"] = job_id
    return response


def _read_call(definition: Tool | Extractor) -> ToolCall:
    """The request as a `ToolCall`; 400/415 for a body or settings the tool cannot take,
    503 for a tool whose optional dependencies are not installed."""
    check_available(definition)
    files = uploaded_files()
    raw = settings_from_request()
    return ToolCall(definition, files, raw, normalize_settings(definition, raw))


def normalize_settings(definition: Tool | Extractor, raw: Any) -> dict[str, Any]:
    """`raw` checked by the definition's schema and dumped back: defaults filled in, wire
    (camelCase) names, plain JSON. Equal settings give equal dicts. Invalid settings raise
    the same 400 VALIDATION_ERROR as running the tool would."""
    loaded = validate_settings(definition.settings, raw)
    try:
        dumped = json.loads(
            json.dumps(normalized_settings(definition.settings, loaded), allow_nan=False)
        )
    except (TypeError, ValueError):
        # A schema whose dump is not plain JSON is a plugin bug; record what was sent.
        log.warning("settings of %s do not dump to JSON; recording them as sent", definition.id)
        return _strict_json_or_empty(raw)
    return dumped if isinstance(dumped, dict) else _strict_json_or_empty(raw)


def _strict_json_or_empty(raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(json.dumps(dict(raw), allow_nan=False))
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_inline(state: AppState, call: ToolCall) -> Response:
    started_at = utcnow()
    outcome = execute(
        call.definition,
        call.files,
        call.raw_settings,
        limits=state.config.limits,
        config=state.config.plugin_config(),
        models=state.models,
    )
    job_id = new_id()
    output: BlobRef | None = None
    if outcome.kind is OutputKind.JSON:
        response = jsonify(outcome.json)
    else:
        response, output = _image_response(state, job_id, outcome)
    _record(state, call, job_id, outcome, output, started_at)
    response.headers["X-Job-Id"] = job_id
    return response


def _record(
    state: AppState,
    call: ToolCall,
    job_id: str,
    outcome: Outcome,
    output: BlobRef | None,
    started_at: datetime,
) -> None:
    try:
        record_inline(
            state.db,
            job_id=job_id,
            definition=call.definition,
            settings=call.settings,
            files=call.files,
            outcome=outcome,
            output=output,
            started_at=started_at,
            finished_at=utcnow(),
        )
    except Exception:
        # The work is done and its result is in hand: an unreachable database costs the
        # call its history entry, not its answer.
        log.exception("could not record inline job %s of %s", job_id, call.definition.id)


def settings_from_request() -> Any:
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
    if request.mimetype == "multipart/form-data" and not request.form and not request.files:
        # Werkzeug parses a body without one well-formed part as an empty form; a tool that
        # takes no file (qr-generate) would then run on its defaults instead of refusing it.
        # Not conditioned on Content-Length: a chunked body has none.
        raise BadRequestError(
            "the multipart body holds no well-formed part: check its boundary and part headers",
            code="MALFORMED_BODY",
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


def uploaded_files() -> dict[str, list[UploadedFile]]:
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


def _image_response(state: AppState, job_id: str, outcome: Outcome) -> tuple[Response, BlobRef]:
    """The answer for an image result and the reference the job records for it.

    The bytes themselves are not stored when they go back in the response: the client has
    them, and the disk write (with its fsync) is the dearest part of keeping a result.
    """
    assert outcome.data is not None and outcome.format is not None and outcome.filename
    # An inline call has one attempt; the download route falls back to attempt 1.
    key = BlobKey.result(job_id, 1, outcome.filename)
    output: BlobRef = {
        "key": key.relative_path,
        "filename": outcome.filename,
        "size": outcome.size,
        "format": outcome.format.name,
    }
    if _prefers_image(outcome.format.media_type):
        response = Response(outcome.data, mimetype=outcome.format.media_type)
        response.headers["ETag"] = (
            '"' + hashlib.blake2b(outcome.data, digest_size=16).hexdigest() + '"'
        )
        response.headers["Content-Disposition"] = f'inline; filename="{outcome.filename}"'
        response.headers["X-Original-Size"] = str(outcome.input_size)
        return response, output
    state.blobs.put(key, outcome.data)
    response = jsonify(
        {
            "jobId": job_id,
            "downloadUrl": url_for("downloads.download", job_id=job_id, filename=outcome.filename),
            "originalSize": outcome.input_size,
            "processedSize": outcome.size,
        }
        | ({"meta": dict(outcome.meta)} if outcome.meta else {})
    )
    return response, output
