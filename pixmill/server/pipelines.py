"""The pipelines resource (seed 003): run steps on one file, and keep named pipelines.

    POST   /api/v1/pipeline/execute   multipart `file` + `pipeline` ({"steps": [...]} as JSON
                                      text) or `pipelineId` (a saved one): 200 with the tool
                                      envelope plus `stepsCompleted` and `steps`, or 202
    POST   /api/v1/pipeline/batch     repeated `files` (or `file`) parts + `pipeline` or
                                      `pipelineId`: the ZIP of the results (with its
                                      manifest), or 202
    POST   /api/v1/pipeline/save      JSON {name, description, steps}: 201 with the pipeline
    GET    /api/v1/pipeline/list      the saved pipelines, by name
    DELETE /api/v1/pipeline/<id>      404 PIPELINE_NOT_FOUND when there is none
    GET    /api/v1/pipeline/tools     the tools usable as steps

What a pipeline is, how it is checked and how it runs is `pixmill.core.pipelines`; this
module reads requests and shapes answers. A pipeline always runs as a job on the workers (on
the in-process runner when the app has no Redis). `execute` waits for it, up to
`WAIT_TIMEOUT_S`, and answers like a tool call: 200 with `downloadUrl`, or the error of the
step that failed with that error's status. It answers 202 at once (seed 003's
`{"jobId","async":true}`) when `?async=true` asks for it, when a step's tool is heavy (as
that tool's own calls are), or when the upload is over `ASYNC_THRESHOLD_MB`; and 202 too
when the wait runs out. Every answer carries the job's id in `X-Job-Id`. `batch` runs the
pipeline on each file as the members of a batch job and answers as a tool's batch does
(`pixmill.server.batch`): the ZIP once every file has ended, or 202 (`?async=true`, a heavy
step, or the wait running out).

Saved pipelines keep their steps as sent (tool id and the settings given), checked at saving
exactly as `execute` checks them and again at every run, so a tool's later defaults apply;
each run's job records the normalized settings it actually ran with.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from pixmill.core.catalogue import describe
from pixmill.core.errors import BadRequestError, PixmillError
from pixmill.core.jobstore import pipeline_to_dict
from pixmill.core.models import JobStatus
from pixmill.core.pipelines import (
    PipelineStep,
    completed_answer,
    failure_of,
    is_heavy,
    parse_definition_text,
    read_definition,
    step_tools,
    submit_pipeline,
    submit_pipeline_batch,
    validate_steps,
)
from pixmill.server.batch import archive_or_accepted, batch_files
from pixmill.server.errors import error_response
from pixmill.server.state import AppState, get_state
from pixmill.server.tools import (
    FORM_TYPES,
    accepted_response,
    async_requested,
    uploaded_files,
)

bp = Blueprint("pipelines", __name__, url_prefix="/api/v1/pipeline")

PIPELINE_FIELD = "pipeline"
PIPELINE_ID_FIELD = "pipelineId"
EXECUTE_FIELDS = frozenset({PIPELINE_FIELD, PIPELINE_ID_FIELD})
SAVE_FIELDS = frozenset({"name", "description", "steps"})
MAX_DESCRIPTION_LENGTH = 2000
# The blueprint's own route names, which are never a saved pipeline's id.
ROUTE_NAMES = ("execute", "batch", "save", "list", "tools")


class PipelineIdConverter(BaseConverter):
    """A saved pipeline's id in a path: any segment but this blueprint's route names, so that
    `DELETE` is not advertised (`Allow`) on `/list` or `/tools`, while an id of the wrong
    shape still reaches the store and gets PIPELINE_NOT_FOUND like an unknown one."""

    regex = rf"(?!(?:{'|'.join(ROUTE_NAMES)})$)[^/]+"


@bp.record_once
def _register_converter(setup: BlueprintSetupState) -> None:
    # Before the routes below: they are added in the order they were recorded.
    setup.app.url_map.converters["pipeline_id"] = PipelineIdConverter


# ----- running -------------------------------------------------------------------------------


@bp.post("/execute")
def execute_pipeline() -> Response:
    state = get_state()
    forced = async_requested()
    steps, pipeline_id = _steps_from_form(state)
    job = submit_pipeline(state.dispatcher, steps, uploaded_files(), pipeline_id=pipeline_id)
    if forced or is_heavy(steps) or job.input_size > state.config.async_threshold_bytes:
        return accepted_response(job.id, str(job.status))
    return answer_when_final(state, job.id)


@bp.post("/batch")
def batch_pipeline() -> Response:
    state = get_state()
    forced = async_requested()
    steps, pipeline_id = _steps_from_form(state)
    files, others = batch_files(uploaded_files())
    if others:
        unexpected = sorted(others)
        raise BadRequestError(
            f"unexpected file part(s) {', '.join(unexpected)}; a pipeline batch takes `files`",
            code="UNEXPECTED_FILE",
            details={"unexpected": unexpected, "accepted": ["files"]},
        )
    batch = submit_pipeline_batch(state.dispatcher, steps, files, pipeline_id=pipeline_id)
    if forced or is_heavy(steps):
        return accepted_response(batch.id, str(batch.status))
    return archive_or_accepted(state, batch.id)


def answer_when_final(state: AppState, job_id: str) -> Response:
    """Wait for the job (up to WAIT_TIMEOUT_S) and answer with its outcome; 202 if it has not
    finished by then, so the client follows it like any queued job."""
    job = state.jobs.wait_until_final(job_id, state.config.wait_timeout_s)
    if job.status is JobStatus.COMPLETED:
        response = jsonify(completed_answer(job))
    elif job.status is JobStatus.FAILED:
        error = failure_of(state.jobs, job)
        response = error_response(error.status, error.code, error.message, error.details)
    elif job.status is JobStatus.CANCELLED:
        response = error_response(
            409, "JOB_CANCELLED", "the pipeline's job was cancelled", {"jobId": job.id}
        )
    else:
        return accepted_response(job.id, str(job.status))
    response.headers["X-Job-Id"] = job.id
    return response


def _steps_from_form(state: AppState) -> tuple[list[PipelineStep], str | None]:
    """The checked steps of the request, from `pipeline` or a saved `pipelineId`."""
    if request.mimetype not in FORM_TYPES:
        raise PixmillError(
            "a pipeline call takes multipart/form-data: a file part and a pipeline field, not "
            f"{request.mimetype or 'an untyped body'}",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    fields = _single_form_values()
    max_steps = state.config.max_pipeline_steps
    if PIPELINE_ID_FIELD in fields:
        if PIPELINE_FIELD in fields:
            raise BadRequestError(
                f"send either {PIPELINE_FIELD} or {PIPELINE_ID_FIELD}, not both",
                code="VALIDATION_ERROR",
                details={"fields": {PIPELINE_ID_FIELD: ["not with pipeline"]}},
            )
        saved = state.jobs.get_pipeline(fields[PIPELINE_ID_FIELD])
        return validate_steps(saved.steps, state.registry, max_steps), saved.id
    definition = parse_definition_text(fields.get(PIPELINE_FIELD), PIPELINE_FIELD)
    return read_definition(definition, state.registry, max_steps), None


def _single_form_values() -> dict[str, str]:
    unexpected = sorted(str(name) for name in set(request.form) - EXECUTE_FIELDS)
    if unexpected:
        raise BadRequestError(
            f"unexpected form field(s) {', '.join(unexpected)}; a pipeline call takes a "
            f"{PIPELINE_FIELD} (JSON) or a {PIPELINE_ID_FIELD} field",
            code="UNEXPECTED_FIELD",
            details={"unexpected": unexpected},
        )
    repeated = sorted(name for name in request.form if len(request.form.getlist(name)) > 1)
    if repeated:
        raise BadRequestError(
            f"form field(s) {', '.join(repeated)} given more than once",
            code="VALIDATION_ERROR",
            details={"fields": {name: ["given more than once"] for name in repeated}},
        )
    return {name: request.form[name] for name in request.form}


# ----- saved pipelines -----------------------------------------------------------------------


@bp.post("/save")
def save_pipeline() -> Response:
    state = get_state()
    body = _json_object_body()
    unknown = sorted(str(key) for key in body if key not in SAVE_FIELDS)
    if unknown:
        raise BadRequestError(
            f"unknown field(s) {', '.join(unknown)}; a saved pipeline has name, description, steps",
            code="VALIDATION_ERROR",
            details={"fields": {key: ["unknown field"] for key in unknown}},
        )
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        problem = f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters"
        raise BadRequestError(
            f"description {problem}",
            code="VALIDATION_ERROR",
            details={"fields": {"description": [problem]}},
        )
    raw_steps: Any = body.get("steps")
    name: Any = body.get("name")  # checked by the store: 1 to 200 characters
    steps = validate_steps(raw_steps, state.registry, state.config.max_pipeline_steps)
    as_sent = [
        {"toolId": step.tool_id, "settings": dict(raw.get("settings") or {})}
        for step, raw in zip(steps, raw_steps, strict=True)
    ]
    saved = state.jobs.save_pipeline(name, as_sent, description=description)
    response = jsonify(pipeline_to_dict(saved))
    response.status_code = 201
    return response


@bp.get("/list")
def list_pipelines() -> Response:
    saved = get_state().jobs.list_pipelines()
    return jsonify({"pipelines": [pipeline_to_dict(item) for item in saved], "total": len(saved)})


@bp.delete("/<pipeline_id:pipeline_id>")
def delete_pipeline(pipeline_id: str) -> Response:
    get_state().jobs.delete_pipeline(pipeline_id)
    return jsonify({"success": True, "message": "pipeline deleted", "pipelineId": pipeline_id})


@bp.get("/tools")
def list_step_tools() -> Response:
    state = get_state()
    tools = step_tools(state.registry)
    return jsonify(
        {
            "toolIds": [tool.id for tool in tools],
            "tools": [describe(tool) for tool in tools],
            "total": len(tools),
            "maxSteps": state.config.max_pipeline_steps,
        }
    )


def _json_object_body() -> dict[str, Any]:
    if not request.is_json:
        raise PixmillError(
            "saving a pipeline takes a JSON body {name, description, steps}, not "
            f"{request.mimetype or 'an untyped body'}",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError(
            "the body must be a JSON object {name, description, steps}",
            code="VALIDATION_ERROR",
            details={"fields": {"_schema": ["not a JSON object"]}},
        )
    return body
