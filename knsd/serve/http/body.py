"""Reading request bodies: JSON bounded in bytes, refused by name when it cannot be served."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from knsd.errors import BadRequest, ClientGone, PayloadTooLarge
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


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, 413 past `limit` bytes, 400 when malformed."""
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if b"\\ud" in body.lower():
        # JSON may escape a lone UTF-16 surrogate (\udc00): Python decodes it into a str that no tokenizer,
        # PNG chunk or JSON response can encode, so refuse it here rather than fail later with a 500.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            try:
                where = _surrogate_path(value)
            except RecursionError:  # nesting json.loads accepted but too deep to walk again: say less
                where = None
            raise BadRequest(
                "request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff)"
                + (f" in {where}" if where else "")
            ) from exc
    return value


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where the first lone surrogate sits ("prompt", "styles[1]", "override_settings.<key>"), ASCII-safe."""
    if isinstance(value, str):
        return (path or "body") if _has_surrogate(value) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            name = ascii(key)[1:-1] if isinstance(key, str) else str(key)
            here = f"{path}.{name}" if path else name
            if isinstance(key, str) and _has_surrogate(key):
                return f"the key {here}"
            found = _surrogate_path(item, here)
            if found:
                return found
    return None


async def read_object(request: Request) -> dict[str, Any]:
    """The JSON object body of a request, bounded by the server's `--max-body-mb`."""
    return require_object(await read_json(request, state_of(request).settings.max_body_bytes))


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
