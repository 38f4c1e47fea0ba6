"""knsd's exceptions: one tree, turned into HTTP statuses or CLI messages at one place each.

KnsdError                     base; `status` is the HTTP status, `exit_code` the CLI exit code
├── BadRequest (400)          a malformed request body (not JSON, not an object)
│   ├── InvalidField (422)    a field of the wrong type or out of range; `field`, `allowed`, `received`
│   ├── PayloadTooLarge (413) a body over the configured limit
│   └── UnsupportedMediaType (415) a body that is not the media type the route reads (JSON)
├── Unauthorized (401)        missing or wrong credentials
├── Forbidden (403)           a cross-site request (its Origin is another site)
├── NotFound (404)            no such job (or not the caller's)
├── Conflict (409)            the request contradicts the resource's state (cancel a finished job)
├── TooManyRequests (429)     over a tenant's rate or queue limit; `retry_after` seconds
├── Unavailable (503)         loading, draining or queue full; `retry_after` seconds
├── ClientGone (499)          the client disconnected before its answer (nginx's code; nobody reads it)
├── GatewayTimeout (504)      no answer in time
├── ModelError (500)          a model could not be built, found or loaded
├── LocalRuntimeError         the local runtime failed to start, answer or stop
├── ClusterError              the Kubernetes API refused, failed or could not be reached
└── UsageError (exit 2)       a bad flag or setting on the command line; `flag`
"""

from __future__ import annotations

import math
from typing import Any


class KnsdError(Exception):
    """Base of every error knsd raises on purpose."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """The body of the HTTP error response, in A1111's error shape plus knsd's fields."""
        return {
            "error": type(self).__name__,
            "detail": self.message,
            "body": "",
            "errors": f"{self.status}: {self.message}",
        }


class BadRequest(KnsdError):
    status = 400
    exit_code = 2


class InvalidField(BadRequest):
    status = 422

    def __init__(self, field: str, allowed: str, received: Any, message: str | None = None) -> None:
        self.field = field
        self.allowed = allowed
        self.received = received
        super().__init__(message or f"{field} must be {allowed}, got {_short(received)}")

    def to_json(self) -> dict[str, Any]:
        received = self.received
        if isinstance(received, float) and not math.isfinite(received):
            received = str(received)  # JSON has no NaN or Infinity: the answer must still encode
        elif not isinstance(received, (str, int, float, bool, type(None))):
            received = repr(received)
        elif isinstance(received, str) and len(received) > 200:
            received = received[:200] + "..."
        return {**super().to_json(), "field": self.field, "allowed": self.allowed, "received": received}


def _short(value: Any) -> str:
    """A received value for a message: its repr, cut to 200 characters (a prompt may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class PayloadTooLarge(BadRequest):
    status = 413


class UnsupportedMediaType(BadRequest):
    status = 415


class Unauthorized(KnsdError):
    status = 401


class Forbidden(KnsdError):
    status = 403


class NotFound(KnsdError):
    status = 404


class Conflict(KnsdError):
    status = 409


class TooManyRequests(KnsdError):
    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayTimeout(KnsdError):
    status = 504


class Unavailable(KnsdError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientGone(KnsdError):
    """The client closed its connection while its request waited or ran; its work was given up."""

    status = 499


class ModelError(KnsdError):
    status = 500


class LocalRuntimeError(KnsdError):
    """The local runtime failed to start, answer or stop."""


class ClusterError(KnsdError):
    """The Kubernetes API refused, failed or could not be reached."""


class UsageError(KnsdError):
    exit_code = 2

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}")
