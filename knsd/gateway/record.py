"""A job's Redis hash as the JSON of `GET /jobs/ID` (pure).

The result, error and progress are stored as the upstream sent them (JSON text, checked once when they
arrived) and spliced in as they are: a multi-megabyte result is never parsed again to be served.
"""

from __future__ import annotations

import json
from typing import Any

TIMES = ("created", "started", "finished", "updated", "retry_at")


def _number(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def job_meta(h: dict[str, bytes]) -> dict[str, Any]:
    """The small fields of a job, typed."""
    text = {k: v.decode(errors="replace") for k, v in h.items() if k in ("id", "status", "route", "pod")}
    meta: dict[str, Any] = {
        "id": text.get("id", ""),
        "status": text.get("status", ""),
        "route": text.get("route", ""),
        "attempts": int(_number(h.get("attempts")) or 0),
    }
    for name in TIMES:
        meta[name] = _number(h.get(name))
    http_status = _number(h.get("http_status"))
    if http_status is not None:
        meta["http_status"] = int(http_status)
    if text.get("pod"):
        meta["pod"] = text["pod"]
    if h.get("cache") == b"hit":
        meta["cache"] = "hit"
    return meta


def job_json(h: dict[str, bytes]) -> bytes:
    """`{id, status, route, attempts, created, started, finished, updated, retry_at, progress, result|error}`."""
    meta = job_meta(h)
    head = json.dumps(meta, separators=(",", ":")).encode()
    parts = [head[:-1], b',"progress":', h.get("progress") or b"null"]
    status = meta["status"]
    if status == "succeeded":
        parts += [b',"result":', h.get("result") or b"null"]
    elif status in ("failed", "cancelled"):
        parts += [b',"error":', h.get("error") or b"null"]
    elif h.get("last_error"):  # queued again after a retryable failure
        parts += [b',"last_error":', h["last_error"]]
    parts.append(b"}")
    return b"".join(parts)


def error_body(error: str, detail: str, status: int, **extra: Any) -> bytes:
    """knsd's error shape (A1111's plus `error`/`detail`)."""
    body = {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}", **extra}
    return json.dumps(body).encode()
