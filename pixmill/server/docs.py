"""Machine- and human-readable descriptions of the API: OpenAPI JSON/YAML, interactive docs
(Swagger UI served from the installed package, no CDN), and `/llms.txt`."""

from __future__ import annotations

from typing import Any

import yaml
from flask import Blueprint, Flask, Response, jsonify, redirect, url_for
from flask_swagger_ui import get_swaggerui_blueprint

import pixmill
from pixmill.core.catalogue import describe
from pixmill.server.openapi import build_openapi
from pixmill.server.state import get_state

bp = Blueprint("docs", __name__)

DOCS_URL = "/api/docs"
OPENAPI_JSON = "/api/v1/openapi.json"


def _spec() -> dict[str, Any]:
    state = get_state()
    if "openapi" not in state.cache:
        state.cache["openapi"] = build_openapi(state.registry)
    spec: dict[str, Any] = state.cache["openapi"]
    return spec


@bp.get(OPENAPI_JSON)
def openapi_json() -> Response:
    return jsonify(_spec())


@bp.get("/api/v1/openapi.yaml")
def openapi_yaml() -> Response:
    text = yaml.safe_dump(_spec(), sort_keys=False, allow_unicode=True)
    return Response(text, mimetype="application/yaml")


@bp.get("/")
def index() -> Response:
    return redirect(url_for("swagger_ui.show"))  # type: ignore[return-value]


def _setting_line(name: str, prop: dict[str, Any]) -> str:
    kind = prop.get("type", "value")
    if isinstance(kind, list):
        kind = "/".join(k for k in kind if k != "null")
    parts = [f"  - `{name}` ({kind})"]
    if "enum" in prop:
        parts.append("one of " + ", ".join(str(v) for v in prop["enum"] if v is not None))
    if "minimum" in prop or "maximum" in prop:
        parts.append(f"range {prop.get('minimum', '')}..{prop.get('maximum', '')}")
    if prop.get("default") is not None:
        parts.append(f"default {prop['default']!r}")
    text = parts[0] + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "")
    if prop.get("description"):
        text += f". {prop['description']}"
    return text


@bp.get("/llms.txt")
def llms_txt() -> Response:
    registry = get_state().registry
    lines = [
        "# pixmill",
        "",
        f"> A self-hosted, plugin-based image tool server (version {pixmill.__version__}). "
        "Send an image, get an image or JSON back.",
        "",
        "## How to call a tool",
        "",
        "POST /api/v1/tools/<section>/<toolId> as multipart/form-data with `file` (the image) "
        "and `settings` (a JSON object as text). Image tools answer "
        '{"jobId","downloadUrl","originalSize","processedSize"}; fetch downloadUrl, or send '
        "`Accept: image/*` to get the bytes directly. Extractors answer with their JSON. "
        'Errors: {"error","code","details","requestId"} with status 400/404/413/415/422/500.',
        "",
        "Heavy tools, large files and `?async=true` answer 202 "
        '{"jobId","async":true,"statusUrl","progressUrl"}: follow progressUrl '
        "(Server-Sent Events; the last event carries the result or the error), then "
        "GET /api/v1/jobs/<id>/results.",
        "",
        "Many files: POST /api/v1/tools/<section>/<toolId>/batch with repeated `files` parts "
        "answers a ZIP (one member per file, in order, plus manifest.json with per-file errors). "
        "Several tools in a row: POST /api/v1/pipeline/execute with `file` and "
        '`pipeline` = {"steps":[{"toolId","settings"},...]}; /api/v1/pipeline/batch for many '
        "files; /api/v1/pipeline/tools lists the tools usable as steps.",
        "",
        f"- OpenAPI 3.1: {OPENAPI_JSON} and /api/v1/openapi.yaml",
        "- Catalogue with JSON Schemas: /api/v1/tools",
        "- Every call is a job: GET /api/v1/jobs, /api/v1/jobs/<id>, /api/v1/jobs/<id>/results, "
        "GET /api/v1/jobs/<id>/progress (SSE), POST /api/v1/jobs/<id>/cancel, "
        "DELETE /api/v1/jobs/<id>; finished jobs in /api/v1/history",
        "",
        "## Tools",
        "",
    ]
    for definition in registry.catalogue():
        entry = describe(definition)
        lines.append(f"### {entry['id']} ({entry['output']} output): {entry['name']}")
        lines.append("")
        lines.append(f"{entry['description']} Endpoint: POST {entry['endpoint']}")
        for name, prop in entry["settingsSchema"].get("properties", {}).items():
            lines.append(_setting_line(name, prop))
        lines.append("")
    if registry.sources:
        lines += ["## Sources (command line: pixmill fetch <id>)", ""]
        for source in sorted(registry.sources.values(), key=lambda s: s.id):
            lines.append(f"- {source.id}: {source.description}")
        lines.append("")
    return Response("\n".join(lines), mimetype="text/plain")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(
        get_swaggerui_blueprint(DOCS_URL, OPENAPI_JSON, config={"app_name": "pixmill API"})
    )
