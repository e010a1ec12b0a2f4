"""The OpenAPI 3.1 document, built from the registry: every tool, extractor and source schema.

Built once per app on first request (plugins are fixed for a process's life) with apispec. The
settings schemas come from `to_json_schema`, the same export the catalogue and the CLI show.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec

import pixmill
from pixmill.core.catalogue import inputs_of, output_kind, tool_path
from pixmill.core.contracts import Extractor, OutputKind, Tool
from pixmill.core.imageio import FORMATS
from pixmill.core.plugin_host import Registry
from pixmill.core.settings import to_json_schema

ERROR_STATUSES = {
    "400": "invalid request or settings (code VALIDATION_ERROR, BAD_REQUEST, MISSING_FILE …)",
    "404": "unknown tool or resource",
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


def _pascal(identifier: str) -> str:
    return "".join(part.capitalize() for part in identifier.replace("_", "-").split("-"))


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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
    _static_paths(spec)
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
