"""`GET /api/v1/health`: is the server up and able to do its work."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

import pixmill
from pixmill.server.state import get_state

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/health")
def health() -> Response:
    state = get_state()
    return jsonify(
        {
            "status": "healthy",
            "version": pixmill.__version__,
            "tools": len(state.registry.tools) + len(state.registry.extractors),
            "sources": len(state.registry.sources),
            "pluginErrors": len(state.registry.errors),
        }
    )
