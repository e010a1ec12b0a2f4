"""`GET /api/v1/plugins` (every plugin with its report) and `GET /api/v1/sources`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from pixmill.core.catalogue import describe
from pixmill.server.state import get_state

bp = Blueprint("plugins", __name__, url_prefix="/api/v1")


@bp.get("/plugins")
def list_plugins() -> Response:
    registry = get_state().registry
    plugins = [info.to_dict() for info in registry.plugins]
    return jsonify(
        {
            "plugins": plugins,
            "total": len(plugins),
            "errors": [{"plugin": name, "error": error} for name, error in registry.errors],
        }
    )


@bp.get("/sources")
def list_sources() -> Response:
    sources = sorted(get_state().registry.sources.values(), key=lambda source: source.id)
    return jsonify({"sources": [describe(source) for source in sources], "total": len(sources)})
