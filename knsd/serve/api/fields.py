"""The field validators every request type uses (pure).

One rule for all of them, as A1111's pydantic models read a body: a missing key and an explicit `null` both
take the default; any other value of the wrong type or out of range is a 422 naming the field (with
`prefix`, its full path such as `alwayson_scripts.controlnet.args[0].weight`) and what was expected.
Non-finite numbers never pass (JSON has none; Python's parser accepts `NaN` and `Infinity`).
"""

from __future__ import annotations

import math
from typing import Any

from knsd.errors import BadRequest, InvalidField


def _name(key: str, prefix: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def require_object(body: Any, what: str = "request body") -> dict[str, Any]:
    """A body (or a nested value) must be a JSON object."""
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def integer(body: dict[str, Any], key: str, default: int, lo: int, hi: int, prefix: str = "") -> int:
    """An integer in [lo, hi]; a float with an integral value (3.0) counts as one."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidField(_name(key, prefix), f"an integer between {lo} and {hi}", value)
    return value


def number(
    body: dict[str, Any],
    key: str,
    default: float,
    lo: float = -math.inf,
    hi: float = math.inf,
    prefix: str = "",
    open_lo: bool = False,
) -> float:
    """A finite number in [lo, hi] (in (lo, hi] with `open_lo`)."""
    value = body.get(key)
    if value is None:
        return default
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or not lo <= value <= hi or (open_lo and value == lo):
        raise InvalidField(_name(key, prefix), _number_range(lo, hi, open_lo), value)
    return float(value)


def _number_range(lo: float, hi: float, open_lo: bool) -> str:
    if lo == -math.inf and hi == math.inf:
        return "a finite number"
    low = f"greater than {lo:g}" if open_lo else f"at least {lo:g}"
    if hi == math.inf:
        return f"a number {low}"
    if lo == -math.inf:
        return f"a number at most {hi:g}"
    return (
        f"a number greater than {lo:g} and at most {hi:g}"
        if open_lo
        else f"a number between {lo:g} and {hi:g}"
    )


def flag(body: dict[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    """true or false."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidField(_name(key, prefix), "true or false", value)
    return value


def text(body: dict[str, Any], key: str, default: str = "", prefix: str = "") -> str:
    """A string."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidField(_name(key, prefix), "a string", value)
    return value


def optional_text(body: dict[str, Any], key: str, prefix: str = "") -> str | None:
    """A string, None when missing, null or empty."""
    return text(body, key, "", prefix) or None


def choice(body: dict[str, Any], key: str, default: str, options: tuple[str, ...], prefix: str = "") -> str:
    """One of `options`, exactly as spelled."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in options:
        raise InvalidField(_name(key, prefix), "one of " + ", ".join(repr(o) for o in options), value)
    return value
