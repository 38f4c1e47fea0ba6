"""What the open `/.knsd/status` may show of a spec: environment names without values, and no value of a
secret-looking field, flag, header or URL password (pure)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"
# A field, annotation, flag or header whose name says it holds a credential.
SECRET_NAME = re.compile(r"token|passw|pwd|secret|credential|auth|key|signature", re.I)
# Pair lists of the spec (NAME, VALUE); `env` is shown by name only.
PAIRS = ("annotations", "service_annotations", "requests", "limits", "node_selector")
SECRET_FLAGS = frozenset({"--upstream-header"})  # `knsd gateway` flags whose values may be credentials


def public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's JSON (`ServiceSpec.to_json`) as the open status shows it."""
    out = dict(spec)
    out["env"] = [str(pair[0]) for pair in spec.get("env") or ()]
    for key in PAIRS:
        if key in out:
            out[key] = [[k, REDACTED if SECRET_NAME.search(str(k)) else v] for k, v in out[key]]
    if "gateway_args" in out:
        out["gateway_args"] = public_args([str(a) for a in out["gateway_args"]])
    shown: dict[str, Any] = public(out)
    return shown


def public_args(args: list[str]) -> list[str]:
    """Command-line flags with the values of secret-looking ones replaced (`--x=V` and `--x V` alike)."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        secret = arg.startswith("--") and (flag in SECRET_FLAGS or bool(SECRET_NAME.search(flag)))
        hide_next = secret and not eq
        out.append(f"{flag}={REDACTED}" if secret and eq else public_url(arg))
    return out


def public(value: Any) -> Any:
    """Any JSON value with secret-looking keys' values replaced and passwords taken out of URLs."""
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_NAME.search(str(k)) and v is not None else public(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [public(v) for v in value]
    if isinstance(value, str):
        return public_url(value)
    return value


def public_url(text: str) -> str:
    """`scheme://user:PASSWORD@host/...` with the password replaced; other text as it is."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))
