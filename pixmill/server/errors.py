"""One error shape for every error, and a request id on every response.

Every failure, whether a `PixmillError` from the core, an HTTP error raised by Flask/Werkzeug
(404, 405, 413 …) or a bug, leaves as
`{"error": "<human message>", "code": "MACHINE_CODE", "details": {...}, "requestId": "req_..."}`
with the `X-Request-ID` header set (the client's own id is echoed when it sent a sane one).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pixmill.core.errors import PixmillError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE_ENTITY",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def request_id() -> str:
    """This request's id: the client's `X-Request-ID` if sane, else a new `req_…` one."""
    rid: str | None = g.get("request_id")
    if rid is None:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        rid = sent if _CLIENT_REQUEST_ID.match(sent) else f"req_{secrets.token_hex(12)}"
        g.request_id = rid
    return rid


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    response = jsonify(
        {"error": message, "code": code, "details": details or {}, "requestId": request_id()}
    )
    response.status_code = status
    return response


def _pixmill_error(exc: PixmillError) -> Response:
    if exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.details)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    details: dict[str, Any] = {}
    if status == 413:
        from pixmill.server.state import get_state

        limit = get_state().config.max_upload_size_mb
        message = f"the request body is larger than the {limit:g} MB limit (MAX_UPLOAD_SIZE_MB)"
        details = {"maxUploadSizeMb": limit}
    if status == 405:
        details = {"allowed": sorted(getattr(exc, "valid_methods", None) or [])}
    response = error_response(status, _HTTP_CODES.get(status, "HTTP_ERROR"), message, details)
    if status == 405 and details["allowed"]:
        response.headers["Allow"] = ", ".join(details["allowed"])
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "INTERNAL_ERROR", "internal server error; see the server log")


def _stamp(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(PixmillError, _pixmill_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_stamp)
