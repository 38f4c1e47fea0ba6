"""Go's string conversions (`strconv`, `time.ParseDuration`, `%v`), so knsd accepts and words what Knative does."""

from __future__ import annotations

import re

NS = 1
US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
_UNITS = {"ns": NS, "us": US, "µs": US, "μs": US, "ms": MS, "s": SECOND, "m": MINUTE, "h": HOUR}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]*)")


class DurationError(ValueError):
    """`time: invalid duration "x"`, as Go says it."""


def parse_duration(text: str) -> int:
    """Parse a Go duration ("1h30m", "42.5s", "-1s", "0") into integer nanoseconds."""
    s = text
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m or (not m.group(1) and not m.group(2)):
            raise DurationError(f'time: invalid duration "{text}"')
        whole, frac, unit = m.group(1) or "0", m.group(2) or "", m.group(3)
        if not unit:
            raise DurationError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{text}"')
        scale = _UNITS[unit]
        total += int(whole) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    if total > 2**63 - 1:
        raise DurationError(f'time: invalid duration "{text}"')
    return sign * total


def _frac(value: int, digits: int) -> str:
    text = str(value).rjust(digits, "0").rstrip("0")
    return "." + text if text else ""


def format_duration(ns: int) -> str:
    """Go's `Duration.String()`: "1h0m0s", "1m30s", "1.5s", "500ms", "0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < SECOND:
        for scale, unit, digits in ((MS, "ms", 6), (US, "µs", 3), (NS, "ns", 0)):
            if u >= scale:
                return f"{sign}{u // scale}{_frac(u % scale, digits)}{unit}"
    hours, rest = divmod(u, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    seconds, nanos = divmod(rest, SECOND)
    out = f"{seconds}{_frac(nanos, 9)}s"
    if hours or minutes:
        out = f"{minutes}m{out}"
    if hours:
        out = f"{hours}h{out}"
    return sign + out


def go_float(x: float) -> str:
    """Go's `%v` of a float64 (shortest representation, exponent past 1e21 or below 1e-4)."""
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    text = repr(float(x))
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-").rjust(2, "0")
        return f"{mantissa.removesuffix('.0')}e{sign}{digits}"
    return text


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)


def parse_int(text: str, bits: int = 64) -> int:
    """`strconv.ParseInt(text, 10, bits)`: ValueError("invalid syntax") or OverflowError("value out of range")."""
    if not _INT.fullmatch(text):
        raise ValueError("invalid syntax")
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise OverflowError("value out of range")
    return value


def parse_float(text: str) -> float:
    """`strconv.ParseFloat(text, 64)` (decimal forms, inf and nan; no spaces or underscores)."""
    if not _FLOAT.fullmatch(text):
        raise ValueError("invalid syntax")
    return float(text)
