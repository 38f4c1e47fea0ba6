"""Exceptions to HTTP answers, in one place: a plain JSON response (the app's handlers) or the `error`
event of a stream carry the same status and body."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException

from knsd.errors import KnsdError, Unavailable

log = logging.getLogger("knsd.serve")


@dataclass(frozen=True, slots=True)
class Failure:
    """What a client is told about an exception: status, A1111's error body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def describe(exc: BaseException, method: str = "", path: str = "") -> Failure:
    """The answer for `exc`; unexpected exceptions are logged with their traceback and become 500s."""
    if isinstance(exc, KnsdError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else {}
        if exc.status >= 500 and not isinstance(exc, Unavailable):
            log.error("%s %s failed: %s", method, path, exc)
        return Failure(exc.status, exc.to_json(), headers)
    if isinstance(exc, HTTPException):
        body = {
            "error": "HTTPException",
            "detail": exc.detail,
            "body": "",
            "errors": f"{exc.status_code}: {exc.detail}",
        }
        return Failure(exc.status_code, body, dict(exc.headers or {}))
    log.error("%s %s crashed", method, path, exc_info=exc)
    return Failure(500, {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)})
