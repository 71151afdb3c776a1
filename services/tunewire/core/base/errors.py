"""Errors a user can meet, each with the HTTP status it maps to.

Handlers raise these; the HTTP layer turns them into 4xx bodies in one place
(:mod:`tunewire.core.process.http`), and the consumer loop sends messages that raise an
:class:`InvalidEvent` straight to the DLQ without retrying them.
"""

from __future__ import annotations

from typing import Any


class TunewireError(Exception):
    """Base of the errors whose message tells the user what to do."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body of the HTTP error response."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidEvent(TunewireError):
    """An event that can never be processed as it is: retrying will not help."""

    status = 422
    code = "invalid_event"

    def __init__(self, message: str, *, kind: str, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.kind = kind


class InvalidRequest(TunewireError):
    """A request body that is not what the endpoint accepts."""

    status = 422
    code = "invalid_request"


class MalformedBody(TunewireError):
    """A body that cannot be read at all (bad JSON, bad UTF-8)."""

    status = 400
    code = "malformed_body"


class PayloadTooLarge(TunewireError):
    status = 413
    code = "payload_too_large"


class Unauthorized(TunewireError):
    status = 401
    code = "unauthorized"


class Forbidden(TunewireError):
    """An authenticated principal without a role the request needs."""

    status = 403
    code = "forbidden"


class NotFound(TunewireError):
    status = 404
    code = "not_found"


class MethodNotAllowed(TunewireError):
    status = 405
    code = "method_not_allowed"


class Conflict(TunewireError):
    status = 409
    code = "conflict"


class Misconfigured(TunewireError):
    """A setting or the environment is wrong (no kubeconfig, missing RBAC): retrying won't help."""

    status = 500
    code = "misconfigured"


class Unavailable(TunewireError):
    """A dependency (broker, S3) is down; the client should retry later."""

    status = 503
    code = "unavailable"
