"""Reading request bodies: JSON bounded in bytes, refused by name when it cannot be served."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from knsd.errors import BadRequest, ClientGone, InvalidField, PayloadTooLarge, UnsupportedMediaType
from knsd.serve.api.fields import require_object
from knsd.serve.http.state import state_of


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, 413 past `limit` bytes (checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"invalid Content-Length header: {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes, the limit is {limit}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    except ClientDisconnect as exc:
        raise ClientGone("client disconnected while sending its request") from exc
    return bytes(body)


MAX_NESTING = 64  # arrays and objects inside each other; A1111's deepest bodies nest about 6 levels
# Commas and brackets in a body (an upper bound on its JSON values, whose Python objects cost ~50 bytes
# each): images are long strings, prompts a few thousand characters.
MAX_VALUES = 200_000


def check_content_type(value: str | None) -> None:
    """JSON routes take `application/json` (or `application/*+json`), or no Content-Type at all, as
    FastAPI (A1111's server) does: 415 for anything else. A form or `text/plain`, which a browser may send
    to another site without asking, never reaches a JSON route."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if kind == "application" and (sub == "json" or sub.endswith("+json")):
        return
    raise UnsupportedMediaType(f"request body must be application/json, got Content-Type {value[:100]!r}")


def parse_json(body: bytes) -> Any:
    """A JSON body's value: 400 when malformed or nested too deeply, 422 naming where a number is not
    finite (Python reads NaN and Infinity, JSON has neither)."""
    values = body.count(b",") + body.count(b"[") + body.count(b"{")
    if values > MAX_VALUES:
        raise BadRequest(
            f"request body has over {MAX_VALUES} JSON values (A1111's bodies have a few hundred)"
        )
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise BadRequest(f"request body is nested deeper than {MAX_NESTING} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    check_values(value, surrogates=b"\\ud" in body.lower())
    return value


def check_values(value: Any, surrogates: bool = True) -> None:
    """Refuse what no handler can use: nesting past MAX_NESTING, non-finite numbers and lone UTF-16
    surrogates (`\\udc00` decodes to a str that no tokenizer, PNG chunk or JSON answer can encode).
    Walked without recursion; paths are ASCII-safe ("prompt", "styles[1]", "override_settings.<key>")."""
    _check_scalar(value, "body", surrogates)
    stack: list[tuple[Any, str, int]] = [(value, "", 1)] if isinstance(value, (list, dict)) else []
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_NESTING:
            raise BadRequest(f"request body is nested deeper than {MAX_NESTING} levels (at {path[:100]})")
        for key, x in enumerate(item) if isinstance(item, list) else item.items():
            if isinstance(key, int):
                here = f"{path}[{key}]"
            else:
                here = f"{path}.{ascii(key)[1:-1]}" if path else ascii(key)[1:-1]
                if surrogates and _has_surrogate(key):
                    raise BadRequest(f"{_SURROGATE} in the key {here}")
            if isinstance(x, (list, dict)):
                stack.append((x, here, depth + 1))
            else:
                _check_scalar(x, here, surrogates)


_SURROGATE = "request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff)"


def _check_scalar(value: Any, path: str, surrogates: bool) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidField(path, "a finite number (JSON has no NaN or Infinity)", str(value))
    if surrogates and isinstance(value, str) and _has_surrogate(value):
        raise BadRequest(f"{_SURROGATE} in {path}")


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


INLINE_JSON = 64 * 1024  # bytes parsed on the event loop (well under a millisecond); larger bodies off it


async def read_object(request: Request) -> dict[str, Any]:
    """The JSON object body of a request: 415 unless it says JSON, 413 past the server's `--max-body-mb`,
    then `parse_json` (on a worker thread when it is large)."""
    check_content_type(request.headers.get("content-type"))
    state = state_of(request)
    body = await read_body(request, state.settings.max_body_bytes)
    value = (
        parse_json(body) if len(body) <= INLINE_JSON else await state.offload.run(lambda: parse_json(body))
    )
    return require_object(value)


@dataclass(frozen=True, slots=True)
class Form:
    """A multipart/form-data body: text fields by name, file parts' bytes by name (repeats kept)."""

    fields: dict[str, str]
    files: dict[str, list[bytes]]


MAX_FORM_PARTS = 32  # files and fields each: OpenAI's image edits send a handful
MAX_FORM_FIELD = 64 * 1024  # bytes of one text field (a prompt)


async def read_form(request: Request) -> Form:
    """A multipart/form-data body bounded like JSON bodies (`--max-body-mb` in all, a few parts, short text
    fields); 400 when it is not multipart or is malformed, 413 when too large."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise BadRequest(f"request body must be multipart/form-data, got {kind or 'no Content-Type'!r}")
    body = await read_body(request, state_of(request).settings.max_body_bytes)

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        request.headers,
        stream(),
        max_files=MAX_FORM_PARTS,
        max_fields=MAX_FORM_PARTS,
        max_part_size=MAX_FORM_FIELD,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc.message}") from exc
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name in fields:
                    raise BadRequest(f"form field {name!r} is given twice")
                fields[name] = value
            else:
                files.setdefault(name, []).append(await value.read())
    finally:
        await form.close()
    return Form(fields, files)
