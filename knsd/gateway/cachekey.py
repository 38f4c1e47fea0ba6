"""Which requests are generations (queued as jobs), which of them may be cached, and their cache key (pure).

A generation is answered from the cache only when it is deterministic: an explicit seed (A1111's `-1`, an
absent or null seed means a random one, as does a variation `subseed` of -1 with `subseed_strength` > 0),
the same route, the same JSON body (canonical: key order and spacing do not matter), the same revision tag
and the same model as the upstream reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from knsd.errors import BadRequest, InvalidField

TXT2IMG, IMG2IMG, OPENAI = "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/v1/images/generations"
EDITS = "/v1/images/edits"  # multipart/form-data: queued and forwarded as sent, never cached
# POST routes that run a model on a pod: queued as jobs, bounded in flight, retried.
JOB_ROUTES = frozenset(
    {
        TXT2IMG,
        IMG2IMG,
        OPENAI,
        EDITS,
        "/sdapi/v1/extra-single-image",
        "/sdapi/v1/extra-batch-images",
        "/controlnet/detect",
    }
)
CACHEABLE = frozenset({TXT2IMG, IMG2IMG, OPENAI})
# Routes that answer `Accept: text/event-stream` with progress events (knsd serve); others get JSON.
STREAMED = frozenset({TXT2IMG, IMG2IMG})
_HASH = re.compile(r"\[([0-9a-fA-F]{8,64})\]\s*$")


def parse_body(route: str, body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """The JSON object of a generation request (400 when it is not one), or the text fields of an edit's
    form; OpenAI's `stream` is refused."""
    if route == EDITS:
        return _refuse_stream(form_fields(body, content_type))
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
    return _refuse_stream(data) if route == OPENAI else data


def _refuse_stream(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("stream") not in (None, False, "false", "False", "0"):
        raise InvalidField(
            "stream",
            "false through the gateway (send Prefer: respond-async and follow GET /jobs/ID for progress)",
            data.get("stream"),
        )
    return data


def form_fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The text fields of a multipart/form-data body (files left out); 400 when it is not one."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise BadRequest(
            f"request body must be multipart/form-data, got {content_type or 'no Content-Type'!r}"
        )
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest("malformed multipart/form-data body")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and part.get_filename() is None:
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return fields


def _fixed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def deterministic(data: dict[str, Any]) -> bool:
    """True when the request names every random choice: a seed other than -1, and a variation seed in use."""
    if not _fixed(data.get("seed", -1)):
        return False
    strength = data.get("subseed_strength") or 0
    if isinstance(strength, (int, float)) and not isinstance(strength, bool) and strength > 0:
        return _fixed(data.get("subseed", -1))
    return True


def cache_key(route: str, data: dict[str, Any], model: str, tag: str = "") -> str:
    """sha256 over the route, the revision tag, the model and the canonical JSON of the body."""
    canonical = json.dumps(
        [route, tag, model, data], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


OFF_LOOP_BYTES = 65536  # above this, JSON is parsed and hashed in a worker thread


async def key_of(route: str, data: dict[str, Any], model: str, tag: str, size: int) -> str:
    """`cache_key`, in a worker thread for a large body (img2img's base64 images)."""
    if size < OFF_LOOP_BYTES:
        return cache_key(route, data, model, tag)
    return await asyncio.to_thread(cache_key, route, data, model, tag)


async def parse_off_loop(route: str, body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """`parse_body`, in a worker thread for a large body."""
    if len(body) < OFF_LOOP_BYTES:
        return parse_body(route, body, content_type)
    return await asyncio.to_thread(parse_body, route, body, content_type)


def model_id(checkpoint_title: str) -> str:
    """The identity of a model from A1111's checkpoint title `name [hash]`: its hash, or the title itself."""
    match = _HASH.search(checkpoint_title)
    return match.group(1).lower() if match else checkpoint_title.strip()


def result_model(result: Any) -> str | None:
    """The model hash an A1111 response says it was made with (`info.sd_model_hash`), if it says."""
    if not isinstance(result, dict) or not isinstance(result.get("info"), str):
        return None
    try:
        info = json.loads(result["info"])
    except ValueError:
        return None
    value = info.get("sd_model_hash") if isinstance(info, dict) else None
    return value.lower() if isinstance(value, str) and value else None
