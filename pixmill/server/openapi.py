"""The OpenAPI 3.1 document, built from the registry: every tool, extractor and source schema.

Built once per app on first request (plugins are fixed for a process's life) with apispec. The
settings schemas come from `to_json_schema`, the same export the catalogue and the CLI show.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec

import pixmill
from pixmill.core.catalogue import inputs_of, output_kind, tool_path
from pixmill.core.contracts import ID_PATTERN, Extractor, OutputKind, Tool
from pixmill.core.imageio import FORMATS
from pixmill.core.jobstore import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from pixmill.core.models import FINAL_STATUSES, TOOL_ID_LENGTH, JobKind, JobStatus
from pixmill.core.plugin_host import Registry
from pixmill.core.settings import to_json_schema

ERROR_STATUSES = {
    "400": "invalid request or settings (code VALIDATION_ERROR, BAD_REQUEST, MISSING_FILE …)",
    "404": "unknown tool or resource",
    "409": "the resource's state does not allow this (e.g. JOB_FINISHED, JOB_RUNNING)",
    "413": "upload larger than MAX_UPLOAD_SIZE_MB, or an image with too many pixels",
    "415": "the file is not an image in a supported format",
    "422": "the image is corrupt, truncated or animated where the tool needs a still",
    "500": "the tool failed unexpectedly",
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code", "details", "requestId"],
    "properties": {
        "error": {"type": "string", "description": "human-readable message"},
        "code": {"type": "string", "description": "machine-readable code"},
        "details": {"type": "object", "description": "structured details, e.g. per-field errors"},
        "requestId": {"type": "string", "description": "also sent as the X-Request-ID header"},
    },
}

TOOL_RESULT_SCHEMA = {
    "type": "object",
    "required": ["jobId", "downloadUrl", "originalSize", "processedSize"],
    "properties": {
        "jobId": {"type": "string"},
        "downloadUrl": {"type": "string", "description": "ends in the output's extension"},
        "originalSize": {"type": "integer", "description": "bytes uploaded"},
        "processedSize": {"type": "integer", "description": "bytes of the result"},
    },
}

_OBJECT = {"type": "object"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}


def _closed(properties: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """An object with exactly these properties, all of them present in every answer."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    return schema


_FILE_SUMMARY = _closed(
    {"filename": _STRING, "size": _INTEGER, "format": _NULLABLE_STRING},
)
_FILES_SUMMARY = _closed(
    {"count": _INTEGER, "totalBytes": _INTEGER, "files": {"type": "array", "items": _FILE_SUMMARY}}
)
_JOB_ERROR = {
    "oneOf": [
        {"type": "null"},
        _closed({"code": _STRING, "message": _NULLABLE_STRING}),
    ]
}
_NULLABLE_OBJECT = {"type": ["object", "null"]}

JOB_SCHEMA = _closed(
    {
        "id": _STRING,
        "kind": {"type": "string", "enum": [kind.value for kind in JobKind]},
        "status": {"type": "string", "enum": [status.value for status in JobStatus]},
        "toolId": _NULLABLE_STRING,
        "pipelineId": _NULLABLE_STRING,
        "parentId": _NULLABLE_STRING,
        "queue": {"type": "string", "description": "RQ queue, or `inline` for inline calls"},
        "progress": _closed(
            {
                "current": _NULLABLE_INTEGER,
                "total": _NULLABLE_INTEGER,
                "percent": {"type": "integer", "minimum": 0, "maximum": 100},
            }
        ),
        "message": _NULLABLE_STRING,
        "attempt": _INTEGER,
        "maxAttempts": _INTEGER,
        "cancelRequested": {"type": "boolean"},
        "settings": {"type": "object", "description": "normalized settings the job ran with"},
        "timings": _closed(
            {
                "createdAt": _TIMESTAMP,
                "startedAt": _NULLABLE_TIMESTAMP,
                "finishedAt": _NULLABLE_TIMESTAMP,
                "durationMs": _NULLABLE_INTEGER,
            }
        ),
        "inputs": _FILES_SUMMARY,
        "results": _FILES_SUMMARY,
        "result": _NULLABLE_OBJECT | {"description": "the JSON an extractor returned"},
        "error": _JOB_ERROR,
        "links": _closed({"self": _STRING, "results": _STRING, "cancel": _STRING}),
    },
    "a job (seed 000's job status): progress, timings, inputs, results summary",
)

PAGINATION_SCHEMA = _closed(
    {
        "page": _INTEGER,
        "limit": _INTEGER,
        "total": _INTEGER,
        "pages": _INTEGER,
        "hasMore": {"type": "boolean"},
    }
)

OUTPUT_FILE_SCHEMA = _closed(
    {
        "filename": _STRING,
        "size": _INTEGER,
        "format": _NULLABLE_STRING,
        "downloadUrl": _NULLABLE_STRING
        | {"description": "null when the file is not stored (expired, or sent inline)"},
        "available": {"type": "boolean"},
    }
)

JOB_RESULTS_SCHEMA = _closed(
    {
        "jobId": _STRING,
        "status": {"type": "string", "enum": sorted(status.value for status in FINAL_STATUSES)},
        "kind": _STRING,
        "toolId": _NULLABLE_STRING,
        "summary": _closed(
            {
                "files": _INTEGER,
                "totalBytes": _INTEGER,
                "inputBytes": _INTEGER,
                "durationMs": _NULLABLE_INTEGER,
            }
        ),
        "files": {"type": "array", "items": _ref("OutputFile")},
        "result": _NULLABLE_OBJECT,
        "error": _JOB_ERROR,
    }
)

HISTORY_ENTRY_SCHEMA = _closed(
    {
        "id": _STRING,
        "type": {"type": "string", "description": "the tool id, or the job kind"},
        "kind": _STRING,
        "toolId": _NULLABLE_STRING,
        "pipelineId": _NULLABLE_STRING,
        "status": {"type": "string", "enum": sorted(status.value for status in FINAL_STATUSES)},
        "parameters": {"type": "object", "description": "the normalized settings"},
        "inputs": _FILES_SUMMARY,
        "outputs": {"type": "array", "items": _ref("OutputFile")},
        "outputBytes": _INTEGER,
        "result": _NULLABLE_OBJECT,
        "error": _JOB_ERROR,
        "createdAt": _TIMESTAMP,
        "finishedAt": _NULLABLE_TIMESTAMP,
        "durationMs": _NULLABLE_INTEGER,
        "links": _closed({"self": _STRING, "job": _STRING}),
    },
    "a finished job with its parameters and outputs (seed 001's history entry)",
)

DELETED_SCHEMA = _closed({"success": {"const": True}, "message": _STRING, "jobId": _STRING})
CANCELLED_SCHEMA = _closed({"success": {"const": True}, "message": _STRING, "job": _ref("Job")})


def _pascal(identifier: str) -> str:
    return "".join(part.capitalize() for part in identifier.replace("_", "-").split("-"))


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _json(_ref("Error"), ERROR_STATUSES[status]) for status in statuses}


def build_openapi(registry: Registry) -> dict[str, Any]:
    spec = APISpec(
        title="pixmill",
        version=pixmill.__version__,
        openapi_version="3.1.0",
        info={
            "description": "A self-hosted, plugin-based image tool server. Every installed "
            "plugin's tools, extractors and sources appear here with their settings schemas."
        },
    )
    spec.components.schema("Error", ERROR_SCHEMA)
    spec.components.schema("ToolResult", TOOL_RESULT_SCHEMA)
    spec.components.schema("Job", JOB_SCHEMA)
    spec.components.schema("Pagination", PAGINATION_SCHEMA)
    spec.components.schema("OutputFile", OUTPUT_FILE_SCHEMA)
    spec.components.schema("JobResults", JOB_RESULTS_SCHEMA)
    spec.components.schema("HistoryEntry", HISTORY_ENTRY_SCHEMA)
    _static_paths(spec)
    _job_paths(spec)
    for definition in registry.catalogue():
        _tool_paths(spec, definition)
    for source in sorted(registry.sources.values(), key=lambda s: s.id):
        spec.components.schema(
            f"{_pascal(source.id)}SourceSettings", to_json_schema(source.settings)
        )
    return spec.to_dict()


def _tool_paths(spec: APISpec, definition: Tool | Extractor) -> None:
    settings_name = f"{_pascal(definition.id)}Settings"
    spec.components.schema(settings_name, to_json_schema(definition.settings))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for spec_input in inputs_of(definition):
        binary = {"type": "string", "contentMediaType": "application/octet-stream"}
        properties[spec_input.name] = (
            {"type": "array", "items": binary} if spec_input.multiple else binary
        ) | {"description": spec_input.description}
        if spec_input.required:
            required.append(spec_input.name)
    properties["settings"] = {
        "type": "string",
        "description": f"JSON object of settings, see {settings_name}",
        "contentMediaType": "application/json",
        "contentSchema": _ref(settings_name),
    }
    if output_kind(definition) is OutputKind.JSON:
        if isinstance(definition, Extractor) and definition.output_schema is not None:
            output_name = f"{_pascal(definition.id)}Output"
            spec.components.schema(output_name, to_json_schema(definition.output_schema))
            ok = _json(_ref(output_name), "the extracted data")
        else:
            ok = _json(_OBJECT, "the extracted data")
    else:
        ok = _json(_ref("ToolResult"), "processed; fetch the result from downloadUrl")
        ok["content"]["image/*"] = {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
        }
        ok["description"] += " (or the image itself when Accept prefers an image type)"
    ok["headers"] = {
        "X-Job-Id": {
            "description": "the job this call was recorded as (see /api/v1/jobs/{jobId})",
            "schema": {"type": "string"},
        }
    }
    spec.path(
        path=tool_path(definition),
        operations={
            "get": {
                "operationId": f"show_{definition.id.replace('-', '_')}",
                "tags": ["catalogue"],
                "summary": f"describe {definition.id}: inputs, output and settings schema",
                "responses": {"200": _json(_OBJECT)},
            },
            "post": {
                "operationId": f"run_{definition.id.replace('-', '_')}",
                "tags": [f"{definition.section} tools"],
                "summary": definition.name,
                "description": definition.description,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": required,
                                "properties": properties,
                                "additionalProperties": False,
                            },
                            "encoding": {"settings": {"contentType": "application/json"}},
                        }
                    },
                },
                "responses": {"200": ok, **_errors("400", "404", "413", "415", "422", "500")},
            },
        },
    )


def _static_paths(spec: APISpec) -> None:
    spec.path(
        path="/api/v1/health",
        operations={
            "get": {
                "operationId": "health",
                "tags": ["server"],
                "responses": {"200": _json(_OBJECT, "healthy")},
            }
        },
    )
    spec.path(
        path="/api/v1/tools",
        operations={
            "get": {
                "operationId": "list_tools",
                "tags": ["catalogue"],
                "summary": "every tool and extractor with its settings schema",
                "responses": {"200": _json(_OBJECT)},
            }
        },
    )
    spec.path(
        path="/api/v1/download/{jobId}/{filename}",
        operations={
            "get": {
                "operationId": "download",
                "tags": ["results"],
                "parameters": [
                    {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the result file",
                        "content": {
                            fmt.media_type: {
                                "schema": {"type": "string", "contentMediaType": fmt.media_type}
                            }
                            for fmt in FORMATS.values()
                        },
                    },
                    **_errors("404"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/plugins",
        operations={
            "get": {
                "operationId": "list_plugins",
                "tags": ["catalogue"],
                "summary": "installed plugins, what they provide, load errors",
                "responses": {"200": _json(_OBJECT)},
            }
        },
    )
    spec.path(
        path="/api/v1/sources",
        operations={
            "get": {
                "operationId": "list_sources",
                "tags": ["catalogue"],
                "responses": {"200": _json(_OBJECT)},
            }
        },
    )


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _enum_list(values: list[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "enum": values},
        "minItems": 1,
    }


_JOB_ID_PARAM = {
    "name": "jobId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "a job id (32 lowercase hex characters); anything else is 404 JOB_NOT_FOUND",
}
_PAGING = [
    _query(
        "page",
        {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
        "page number, from 1",
    ),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT, "default": DEFAULT_PAGE_LIMIT},
        "jobs per page",
    ),
]
_DATE_RANGE = [
    _query(
        "from",
        {"type": "string"},
        "created at or after: ISO 8601 date or date-time (UTC unless an offset is given)",
    ),
    _query(
        "to",
        {"type": "string"},
        "created at or before: ISO 8601 date (the whole day) or date-time",
    ),
]
_LIST_STYLE = {"style": "form", "explode": False}
_TOOL_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": TOOL_ID_LENGTH,
    "pattern": ID_PATTERN.pattern,
}


def _job_paths(spec: APISpec) -> None:
    job_statuses = [status.value for status in JobStatus]
    final_statuses = sorted(status.value for status in FINAL_STATUSES)
    spec.path(
        path="/api/v1/jobs",
        operations={
            "get": {
                "operationId": "list_jobs",
                "tags": ["jobs"],
                "summary": "jobs, newest first, filtered and paginated",
                "parameters": [
                    *_PAGING,
                    _query("status", _enum_list(job_statuses), "comma-separated statuses")
                    | _LIST_STYLE,
                    _query("kind", _enum_list([k.value for k in JobKind]), "comma-separated kinds")
                    | _LIST_STYLE,
                    _query("tool", _TOOL_ID, "only jobs of this tool id"),
                    *_DATE_RANGE,
                ],
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "jobs": {"type": "array", "items": _ref("Job")},
                                "pagination": _ref("Pagination"),
                            }
                        )
                    ),
                    **_errors("400"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{jobId}",
        operations={
            "get": {
                "operationId": "show_job",
                "tags": ["jobs"],
                "summary": "a job's status, progress, timings and results summary",
                "parameters": [_JOB_ID_PARAM],
                "responses": {"200": _json(_ref("Job")), **_errors("404")},
            },
            "delete": {
                "operationId": "delete_job",
                "tags": ["jobs"],
                "summary": "delete a job's record and files",
                "description": "A queued job is cancelled and deleted. A processing job is "
                "asked to cancel and refused with 409 JOB_RUNNING; delete it once it stopped.",
                "parameters": [_JOB_ID_PARAM],
                "responses": {"200": _json(DELETED_SCHEMA), **_errors("404", "409")},
            },
        },
    )
    spec.path(
        path="/api/v1/jobs/{jobId}/results",
        operations={
            "get": {
                "operationId": "job_results",
                "tags": ["jobs"],
                "summary": "a finished job's files with download URLs, or its extracted JSON",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(_ref("JobResults")),
                    **_errors("404"),
                    "409": _json(_ref("Error"), "the job has not finished (JOB_NOT_FINISHED)"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/jobs/{jobId}/cancel",
        operations={
            "post": {
                "operationId": "cancel_job",
                "tags": ["jobs"],
                "summary": "cancel a job",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json(CANCELLED_SCHEMA, "the queued job is cancelled; it never runs"),
                    "202": _json(
                        CANCELLED_SCHEMA,
                        "the job is running: cancellation requested, it stops at its next check",
                    ),
                    **_errors("404"),
                    "409": _json(_ref("Error"), "the job has already finished (JOB_FINISHED)"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/history",
        operations={
            "get": {
                "operationId": "list_history",
                "tags": ["history"],
                "summary": "finished jobs with their parameters and outputs, newest first",
                "parameters": [
                    *_PAGING,
                    _query(
                        "type",
                        {"type": "string", "minLength": 1, "maxLength": TOOL_ID_LENGTH},
                        "a tool id, or a job kind (" + ", ".join(k.value for k in JobKind) + ")",
                    ),
                    _query("status", _enum_list(final_statuses), "comma-separated final statuses")
                    | _LIST_STYLE,
                    *_DATE_RANGE,
                ],
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "history": {"type": "array", "items": _ref("HistoryEntry")},
                                "pagination": _ref("Pagination"),
                            }
                        )
                    ),
                    **_errors("400"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/history/{jobId}",
        operations={
            "get": {
                "operationId": "show_history_entry",
                "tags": ["history"],
                "parameters": [_JOB_ID_PARAM],
                "responses": {"200": _json(_ref("HistoryEntry")), **_errors("404")},
            },
            "delete": {
                "operationId": "delete_history_entry",
                "tags": ["history"],
                "summary": "delete a finished job's record and files",
                "parameters": [_JOB_ID_PARAM],
                "responses": {"200": _json(DELETED_SCHEMA), **_errors("404")},
            },
        },
    )
