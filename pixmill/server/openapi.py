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
from pixmill.core.models import (
    FINAL_STATUSES,
    PIPELINE_NAME_LENGTH,
    TOOL_ID_LENGTH,
    JobKind,
    JobStatus,
)
from pixmill.core.pipelines import step_tools
from pixmill.core.plugin_host import Registry
from pixmill.core.settings import to_json_schema
from pixmill.server.pipelines import PipelineIdConverter

ERROR_STATUSES = {
    "400": "invalid request or settings (code VALIDATION_ERROR, BAD_REQUEST, MISSING_FILE …)",
    "403": "forbidden (ADMIN_DISABLED: the admin routes are off, see PIXMILL_ENABLE_ADMIN)",
    "404": "unknown tool or resource",
    "409": "the resource's state does not allow this (e.g. JOB_FINISHED, JOB_RUNNING)",
    "413": "upload larger than MAX_UPLOAD_SIZE_MB, or an image with too many pixels",
    "415": "the file is not an image in a supported format",
    "422": "the image is corrupt, truncated or animated where the tool needs a still",
    "500": "the tool failed unexpectedly",
    "503": "the tool's optional dependencies are not installed (TOOL_UNAVAILABLE; details.install)",
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
        "meta": {
            "type": "object",
            "description": "facts the tool reports about its result (e.g. compare's score)",
        },
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
        "links": _closed(
            {"self": _STRING, "results": _STRING, "cancel": _STRING, "progress": _STRING}
        ),
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


ACCEPTED_SCHEMA = _closed(
    {
        "jobId": _STRING,
        "async": {"type": "boolean", "const": True},
        "status": {"type": "string", "enum": [status.value for status in JobStatus]},
        "statusUrl": _STRING,
        "progressUrl": _STRING,
    },
    "queued work (seed 003's long-running answer): follow it at statusUrl or progressUrl",
)
ASYNC_PARAMETER = {
    "name": "async",
    "in": "query",
    "required": False,
    # "" too: `?async=` reads as false (`tools.async_requested`).
    "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", ""]},
    "description": "true: queue the work and answer 202 at once (heavy tools and large "
    "inputs are queued anyway)",
}


def accepted_response() -> dict[str, Any]:
    """The 202 answer of queued work, for every operation that can queue."""
    response = _json(_ref("Accepted"), "queued; follow the job at statusUrl or progressUrl")
    response["headers"] = {
        "Location": {"description": "the job", "schema": _STRING},
        "X-Job-Id": {"description": "the job's id", "schema": _STRING},
    }
    return response


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
    spec.components.schema("Accepted", ACCEPTED_SCHEMA)
    _static_paths(spec)
    _job_paths(spec)
    for definition in registry.catalogue():
        _tool_paths(spec, definition)
    _batch_paths(spec, registry)
    _pipeline_paths(spec, registry)
    _feature_paths(spec)
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
        # A document tool (favicon's ZIP, image-to-pdf) answers in its own file type.
        raw_type = "*/*" if output_kind(definition) is OutputKind.FILE else "image/*"
        ok["content"][raw_type] = {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
        }
        ok["description"] += " (or the file itself when Accept prefers its type)"
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
                "parameters": [ASYNC_PARAMETER],
                "requestBody": {
                    # A tool that takes no file (qr-generate) runs on its defaults without one.
                    "required": bool(required),
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
                "responses": {
                    "200": ok,
                    "202": accepted_response(),
                    **_errors(
                        "400",
                        "404",
                        "413",
                        "415",
                        "422",
                        "500",
                        *(["503"] if definition.requires else []),
                    ),
                },
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


_FEATURE_SCHEMA = _closed(
    {
        "id": _STRING,
        "name": _STRING,
        "description": _STRING,
        "package": {"type": "string", "description": "what pip installs"},
        "distribution": {"type": "string", "description": "the installed package's name"},
        "plugins": {"type": "array", "items": _STRING},
        "models": {
            "type": "array",
            "items": _closed(
                {
                    "name": _STRING,
                    "size": _INTEGER,
                    "sha256": _STRING,
                    "present": {"type": "boolean"},
                }
            ),
        },
        "sizeEstimate": _INTEGER,
        "status": {"type": "string", "enum": ["installed", "available", "broken"]},
        "version": _NULLABLE_STRING,
        "problems": {"type": "array", "items": _STRING},
        "restartRequired": {
            "type": "boolean",
            "description": "the server loads plugins at start: restart it to apply the change",
        },
        "modelBytes": _INTEGER,
        "jobId": {"type": ["string", "null"], "description": "an unfinished job of the bundle"},
    },
    "a feature bundle: a plugin package and the model files it needs",
)
_DISK_USAGE_SCHEMA = _closed(
    {
        "modelsDir": _STRING,
        "totalBytes": _INTEGER,
        "bundles": {
            "type": "array",
            "items": _closed(
                {"id": _STRING, "bytes": _INTEGER, "inCatalogue": {"type": "boolean"}}
            ),
        },
    }
)


def _feature_paths(spec: APISpec) -> None:
    """Feature bundles (`pixmill.server.features`); the admin routes answer 403 unless
    PIXMILL_ENABLE_ADMIN=1."""
    spec.path(
        path="/api/v1/features",
        operations={
            "get": {
                "operationId": "list_features",
                "tags": ["features"],
                "summary": "feature bundles and their install status",
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "features": {"type": "array", "items": _FEATURE_SCHEMA},
                                "total": _INTEGER,
                            }
                        )
                    ),
                    **_errors("500"),
                },
            }
        },
    )
    bundle_id = {"name": "bundleId", "in": "path", "required": True, "schema": _STRING}
    for action in ("install", "uninstall"):
        spec.path(
            path=f"/api/v1/admin/features/{{bundleId}}/{action}",
            operations={
                "post": {
                    "operationId": f"{action}_feature",
                    "tags": ["features"],
                    "summary": f"{action} a feature bundle as a job (admin)",
                    "parameters": [bundle_id],
                    "responses": {
                        "202": accepted_response(),
                        **_errors("403", "404", "409", "500"),
                    },
                }
            },
        )
    spec.path(
        path="/api/v1/admin/features/disk-usage",
        operations={
            "get": {
                "operationId": "features_disk_usage",
                "tags": ["features"],
                "summary": "bytes used by model files, in total and per bundle (admin)",
                "responses": {"200": _json(_DISK_USAGE_SCHEMA), **_errors("403", "500")},
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
                    _query(
                        "parent",
                        {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "the jobs of this batch or pipeline (without it: top-level jobs only)",
                    ),
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
        path="/api/v1/jobs/{jobId}/progress",
        operations={
            "get": {
                "operationId": "job_progress",
                "tags": ["jobs"],
                "summary": "live progress as Server-Sent Events, ending with the full result",
                "description": "`data:` events with `jobId`, `status`, `progress` (0-100) and "
                "`message`. The first is the job's current state; the stream ends after the "
                "final one (completed, failed or cancelled), which also carries `downloadUrl`, "
                "`files`, `originalSize` and `processedSize`, the extracted `result`, or the "
                "`error`. `: keep-alive` comments keep a quiet stream open; a stream ends after "
                "STREAM_MAX_S and an EventSource reconnects to the current state.",
                "parameters": [
                    _JOB_ID_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "sent by a reconnecting EventSource: the id of a final "
                        "event (its status) on a finished job is answered 204, which ends "
                        "reconnection; any other value changes nothing",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {
                            "text/event-stream": {
                                "schema": {
                                    "type": "string",
                                    "description": "`data:{...}`, `id:` and `retry:` lines",
                                }
                            }
                        },
                    },
                    "204": {"description": "the client has the final event already: stop"},
                    **_errors("404"),
                    "503": {
                        **_json(
                            _ref("Error"),
                            "this server process has its most open streams (TOO_MANY_STREAMS): "
                            "threads are kept for ordinary requests; retry or poll the job",
                        ),
                        "headers": {
                            "Retry-After": {
                                "description": "seconds to wait before trying again",
                                "schema": {"type": "integer"},
                            }
                        },
                    },
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


# ----- pipelines ----------------------------------------------------------------------------

_PIPELINE_STEP_REPORT = _closed(
    {
        "step": {"type": "integer", "minimum": 1, "description": "position, from 1"},
        "toolId": _STRING,
        "inputSize": _INTEGER,
        "outputSize": _INTEGER,
        "format": {"type": "string", "description": "the step's output format"},
        "cached": {
            "type": "boolean",
            "description": "true: an earlier identical step's stored result was reused",
        },
    }
)
PIPELINE_RESULT_SCHEMA = _closed(
    {
        "jobId": _STRING,
        "downloadUrl": {"type": "string", "description": "ends in the last step's extension"},
        "originalSize": {"type": "integer", "description": "bytes uploaded"},
        "processedSize": {"type": "integer", "description": "bytes of the result"},
        "stepsCompleted": _INTEGER,
        "steps": {"type": "array", "items": _PIPELINE_STEP_REPORT},
    },
    "a finished pipeline (seed 003's tool envelope with the steps)",
)
SAVED_PIPELINE_SCHEMA = _closed(
    {
        "id": _STRING,
        "name": _STRING,
        "description": _STRING,
        "steps": {
            "type": "array",
            "items": _closed({"toolId": _STRING, "settings": _OBJECT}),
            "description": "as saved: each step's tool and the settings given",
        },
        "ownerId": _NULLABLE_STRING,
        "createdAt": _TIMESTAMP,
        "updatedAt": _TIMESTAMP,
    },
    "a named pipeline",
)
_PIPELINE_ID_PARAM = {
    "name": "pipelineId",
    "in": "path",
    "required": True,
    # The other pipeline routes' names are not ids: DELETE on them is 405.
    "schema": {"type": "string", "pattern": f"^{PipelineIdConverter.regex}$"},
    "description": "a saved pipeline's id; anything else is 404 PIPELINE_NOT_FOUND",
}


def _pipeline_steps_schema(registry: Registry) -> dict[str, Any]:
    """`steps`: each a step tool's id and that tool's settings.

    The settings are described as an object pointing at the tool's own schema, not inlined
    as one `oneOf` branch per tool: the settings layer is more lenient than those schemas
    (a non-strict Marshmallow Integer takes 2.5 as 2), and a schema here claiming otherwise
    would be wrong about what the server accepts.
    """
    tool_ids = [tool.id for tool in step_tools(registry)]
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["toolId"],
            "properties": {
                "toolId": {"type": "string", "enum": tool_ids} if tool_ids else {"not": {}},
                "settings": {
                    "type": ["object", "null"],
                    "description": "the tool's settings (its <ToolId>Settings schema); "
                    "omitted or null: all defaults",
                },
            },
            "additionalProperties": False,
        },
        "description": "run in order, each step's output the next one's input; at most "
        "MAX_PIPELINE_STEPS steps (see /api/v1/pipeline/tools)",
    }


def _pipeline_paths(spec: APISpec, registry: Registry) -> None:
    spec.components.schema("PipelineResult", PIPELINE_RESULT_SCHEMA)
    spec.components.schema("SavedPipeline", SAVED_PIPELINE_SCHEMA)
    steps = _pipeline_steps_schema(registry)
    definition = _closed({"steps": steps}, "a pipeline")
    spec.path(
        path="/api/v1/pipeline/execute",
        operations={
            "post": {
                "operationId": "execute_pipeline",
                "tags": ["pipelines"],
                "summary": "run tool steps on one image, each step's output the next's input",
                "description": "Steps are checked before any work (400 naming the step). The "
                "call waits for the result like a tool call; it answers 202 when async=true, "
                "when a step's tool is heavy, when the upload is over ASYNC_THRESHOLD_MB, or "
                "when WAIT_TIMEOUT_S passes first. A failed step answers with its own error.",
                "parameters": [ASYNC_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                        "description": "the image",
                                    },
                                    "pipeline": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "contentSchema": definition,
                                        "description": 'the steps as JSON: {"steps": [{"toolId",'
                                        ' "settings"}]}',
                                    },
                                    "pipelineId": {
                                        "type": "string",
                                        "description": "run a saved pipeline instead",
                                    },
                                },
                                "additionalProperties": False,
                            },
                            "encoding": {"pipeline": {"contentType": "application/json"}},
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("PipelineResult"), "every step ran; fetch downloadUrl")
                    | {"headers": {"X-Job-Id": {"description": "the job", "schema": _STRING}}},
                    "202": accepted_response(),
                    **_errors("400", "404"),
                    "409": _json(_ref("Error"), "the job was cancelled (JOB_CANCELLED)"),
                    **_errors("413", "415", "422", "500"),
                },
            }
        },
    )
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    spec.path(
        path="/api/v1/pipeline/batch",
        operations={
            "post": {
                "operationId": "batch_pipeline",
                "tags": ["pipelines"],
                "summary": "run the pipeline on each of several images; one ZIP of the results",
                "description": "Each file is a pipeline job of its own, spread over the "
                "workers. The ZIP holds one result per file that succeeded, in input order, "
                "and manifest.json with every file's status and error: a file that fails does "
                "not sink the batch. 202 when async=true, when a step's tool is heavy, or when "
                "WAIT_TIMEOUT_S passes first. At most MAX_BATCH_SIZE files.",
                "parameters": [ASYNC_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "files": {
                                        "type": "array",
                                        "items": binary,
                                        "description": "the images, in order",
                                    },
                                    "file": {
                                        "type": "array",
                                        "items": binary,
                                        "description": "the images, if not sent as files",
                                    },
                                    "pipeline": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "contentSchema": definition,
                                        "description": "the steps as JSON",
                                    },
                                    "pipelineId": {
                                        "type": "string",
                                        "description": "run a saved pipeline instead",
                                    },
                                },
                                "additionalProperties": False,
                            },
                            "encoding": {"pipeline": {"contentType": "application/json"}},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the ZIP: each file's result and manifest.json",
                        "content": {
                            "application/zip": {
                                "schema": {"type": "string", "contentMediaType": "application/zip"}
                            }
                        },
                        "headers": {
                            "X-Job-Id": {"description": "the batch job", "schema": _STRING}
                        },
                    },
                    "202": accepted_response(),
                    **_errors("400", "404"),
                    "409": _json(_ref("Error"), "the batch was cancelled (JOB_CANCELLED)"),
                    **_errors("413", "415", "500"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/pipeline/save",
        operations={
            "post": {
                "operationId": "save_pipeline",
                "tags": ["pipelines"],
                "summary": "save a named pipeline",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name", "steps"],
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": PIPELINE_NAME_LENGTH,
                                    },
                                    "description": {"type": "string", "maxLength": 2000},
                                    "steps": steps,
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("SavedPipeline"), "saved"),
                    **_errors("400"),
                    "409": _json(_ref("Error"), "a pipeline has this name (PIPELINE_EXISTS)"),
                    "415": _json(_ref("Error"), "the body is not JSON"),
                },
            }
        },
    )
    spec.path(
        path="/api/v1/pipeline/list",
        operations={
            "get": {
                "operationId": "list_pipelines",
                "tags": ["pipelines"],
                "summary": "the saved pipelines, by name",
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "pipelines": {"type": "array", "items": _ref("SavedPipeline")},
                                "total": _INTEGER,
                            }
                        )
                    )
                },
            }
        },
    )
    spec.path(
        path="/api/v1/pipeline/tools",
        operations={
            "get": {
                "operationId": "list_pipeline_tools",
                "tags": ["pipelines"],
                "summary": "the tools usable as pipeline steps (image in, image out)",
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "toolIds": {"type": "array", "items": _STRING},
                                "tools": {"type": "array", "items": _OBJECT},
                                "total": _INTEGER,
                                "maxSteps": _INTEGER,
                            }
                        )
                    )
                },
            }
        },
    )
    spec.path(
        path="/api/v1/pipeline/{pipelineId}",
        operations={
            "delete": {
                "operationId": "delete_pipeline",
                "tags": ["pipelines"],
                "summary": "delete a saved pipeline (jobs that ran it keep their record)",
                "parameters": [_PIPELINE_ID_PARAM],
                "responses": {
                    "200": _json(
                        _closed(
                            {
                                "success": {"const": True},
                                "message": _STRING,
                                "pipelineId": _STRING,
                            }
                        )
                    ),
                    **_errors("404"),
                    "405": _json(_ref("Error"), "not a pipeline id but another route's name"),
                },
            }
        },
    )


# ----- batches ------------------------------------------------------------------------------

_NULLABLE_JOB_ERROR = {
    "oneOf": [{"type": "null"}, _closed({"code": _NULLABLE_STRING, "message": _NULLABLE_STRING})]
}
BATCH_MANIFEST_SCHEMA = _closed(
    {
        "jobId": {"type": "string", "description": "the batch job"},
        "toolId": _NULLABLE_STRING,
        "pipelineId": _NULLABLE_STRING,
        "archive": {"type": "string", "description": "the ZIP's file name"},
        "counts": _closed(
            {"total": _INTEGER, "completed": _INTEGER, "failed": _INTEGER, "cancelled": _INTEGER}
        ),
        "files": {
            "type": "array",
            "description": "one entry per input file, in input order",
            "items": _closed(
                {
                    "index": {"type": "integer", "minimum": 0},
                    "filename": {"type": "string", "description": "the file's name as sent"},
                    "jobId": {"type": "string", "description": "the file's own job"},
                    "status": {
                        "type": "string",
                        "enum": sorted(status.value for status in FINAL_STATUSES),
                    },
                    "output": {
                        "type": ["string", "null"],
                        "description": "the file's entry in the ZIP; null when it produced none",
                    },
                    "originalSize": _INTEGER,
                    "processedSize": _NULLABLE_INTEGER,
                    "error": _NULLABLE_JOB_ERROR,
                }
            ),
        },
    },
    "`manifest.json` in a batch's ZIP, also the batch job's `result`",
)


def _batch_paths(spec: APISpec, registry: Registry) -> None:
    """One operation for every tool's batch: the tool is a path parameter (its settings
    schema is the tool's own, see its POST), which keeps the document one tool's size."""
    spec.components.schema("BatchManifest", BATCH_MANIFEST_SCHEMA)
    catalogue = registry.catalogue()
    binary = {"type": "string", "contentMediaType": "application/octet-stream"}
    many = {"type": "array", "items": binary, "minItems": 1}
    spec.path(
        path="/api/v1/tools/{section}/{toolId}/batch",
        operations={
            "post": {
                "operationId": "run_batch",
                "tags": ["batch"],
                "summary": "run a tool on many files: one ZIP of the results and a manifest",
                "description": "Each file becomes a job of its own on the workers. The answer "
                "is the ZIP once they have all finished: one entry per file that produced a "
                "result, in input order, names made unique (photo.jpg, photo-2.jpg), extractor "
                "results as <name>.json, and manifest.json (BatchManifest) with every file's "
                "status, output, sizes and error. A file that fails (not an image, corrupt, the "
                "tool refused it) fails alone. Archives are not unpacked: a .zip is a file in "
                "an unsupported format. At most MAX_BATCH_SIZE files. With async=true, or when "
                "WAIT_TIMEOUT_S passes first, the answer is 202 and the ZIP is the batch job's "
                "result.",
                "parameters": [
                    {
                        "name": "section",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": sorted({d.section for d in catalogue}),
                        },
                    },
                    {
                        "name": "toolId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": [d.id for d in catalogue]},
                        "description": "any tool or extractor of the catalogue",
                    },
                    ASYNC_PARAMETER,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "files": many | {"description": "the files, in order"},
                                    "file": many
                                    | {"description": "the same, for clients that send `file`"},
                                    "settings": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "description": "the tool's settings as one JSON object, "
                                        "applied to every file",
                                    },
                                },
                                "additionalProperties": binary
                                | {"description": "the tool's other file parts, shared"},
                            },
                            "encoding": {"settings": {"contentType": "application/json"}},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the ZIP of the results (manifest.json inside)",
                        "headers": {
                            "X-Job-Id": {"description": "the batch job", "schema": _STRING},
                            "Content-Disposition": {
                                "description": 'attachment; filename="<toolId>-batch.zip"',
                                "schema": _STRING,
                            },
                        },
                        "content": {
                            "application/zip": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/zip",
                                }
                            }
                        },
                    },
                    "202": accepted_response(),
                    **_errors("400", "404"),
                    "409": _json(_ref("Error"), "the batch was cancelled (JOB_CANCELLED)"),
                    **_errors("413", "415", "500"),
                },
            }
        },
    )
