"""Every error pixmill reports on purpose, with its machine code and HTTP status.

The server turns a `PixmillError` into the documented error body
(`{"error", "code", "details", "requestId"}`); the CLI turns it into a message and an exit
code. Anything that is not a `PixmillError` is a bug and becomes a 500 `INTERNAL_ERROR`.
"""

from __future__ import annotations

from typing import Any


class PixmillError(Exception):
    """Base of every expected failure: a human message, a machine code, a status, details."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}


class BadRequestError(PixmillError):
    status = 400
    code = "BAD_REQUEST"


class SettingsError(BadRequestError):
    """Settings failed their plugin's schema; `details["fields"]` maps field -> messages."""

    code = "VALIDATION_ERROR"


class NotFoundError(PixmillError):
    status = 404
    code = "NOT_FOUND"


class ConflictError(PixmillError):
    """The request is valid but the resource's current state does not allow it."""

    status = 409
    code = "CONFLICT"


class PayloadTooLargeError(PixmillError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class ImageTooLargeError(PayloadTooLargeError):
    """The image declares more pixels (or frames) than the configured cap: a likely bomb."""

    code = "IMAGE_TOO_LARGE"


class UnsupportedFormatError(PixmillError):
    status = 415
    code = "UNSUPPORTED_FORMAT"


class InvalidImageError(PixmillError):
    """The bytes claim a supported format but cannot be decoded (corrupt or truncated)."""

    status = 422
    code = "INVALID_IMAGE"


class AnimatedImageError(PixmillError):
    """The tool works on still images and refuses to flatten an animation silently."""

    status = 422
    code = "ANIMATED_IMAGE_UNSUPPORTED"


class UnavailableError(PixmillError):
    """A tool whose optional dependencies are not installed: the answer says what to install."""

    status = 503
    code = "TOOL_UNAVAILABLE"


class ToolFailedError(PixmillError):
    """A plugin raised something unexpected while running: reported, never a crash."""

    status = 500
    code = "TOOL_FAILED"


# A plugin gave back something the contract does not allow (a wrong result type): a bug
# that running it again cannot fix, so a queued job fails at once instead of being retried.
PLUGIN_CONTRACT_VIOLATION = "PLUGIN_CONTRACT_VIOLATION"


class CancelledError(PixmillError):
    status = 409
    code = "CANCELLED"
