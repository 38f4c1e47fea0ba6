"""A1111 v1.10.1's whole settings object: every key, its default, its type and how it goes on the wire (pure).

The table (`knsd/data/a1111-options.json`, provenance inside) lists the 329 options a stock A1111 webui with
`--api` registers, in its order. `GET /sdapi/v1/options` returns all of them, as A1111's response model
does; an int option whose A1111 field is typed float goes out as a float (`"CLIP_stop_at_last_layers": 1.0`).
How knsd treats each key on `POST /sdapi/v1/options` and in `override_settings` is knsd.serve.api.policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from knsd.errors import InvalidField


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One A1111 option: its default and what values it takes."""

    key: str
    default: Any
    type: str  # the Python type of A1111's default: bool, int, float, str, list or NoneType
    wire_float: bool = False  # GET sends it as a float
    choices: tuple[str, ...] = ()  # a radio/dropdown's fixed choices (a list option: its items' choices)
    kind: str = "b"  # knsd's reading: a = changes what knsd returns, b = harmless, c = needs what knsd lacks
    note: str = ""
    restrict_api: bool = False  # A1111 ignores API writes of it


@cache
def option_specs() -> dict[str, OptionSpec]:
    """Every A1111 option by key, in A1111's order."""
    data = json.loads(resources.files("knsd").joinpath("data/a1111-options.json").read_text("utf-8"))
    specs: dict[str, OptionSpec] = {}
    for key, entry in data["options"].items():
        specs[key] = OptionSpec(
            key=key,
            default=entry["default"],
            type=entry["type"],
            wire_float=entry.get("wire") == "float",
            choices=tuple(entry.get("choices") or entry.get("items") or ()),
            kind=entry["class"],
            note=entry.get("note", ""),
            restrict_api=bool(entry.get("restrict_api")),
        )
    return specs


def a1111_defaults() -> dict[str, Any]:
    """The options object of a fresh A1111 install (stored values)."""
    return {key: spec.default for key, spec in option_specs().items()}


def wire(options: dict[str, Any]) -> dict[str, Any]:
    """The object as A1111's GET sends it: float-typed fields as floats."""
    specs = option_specs()
    out = {}
    for key, value in options.items():
        spec = specs.get(key)
        if spec is not None and spec.wire_float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def typed(spec: OptionSpec, value: Any, name: str) -> Any:
    """`value` checked against the option's type and fixed choices (A1111's pydantic field would coerce
    ints and integral floats alike); a 422 naming `name` otherwise."""
    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidField(name, "true or false", value)
    elif kind == "int":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(name, "an integer", value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidField(name, "a finite number", value)
    elif kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidField(name, "a list of strings", value)
        bad = [v for v in value if spec.choices and v not in spec.choices]
        if bad:
            raise InvalidField(name, "a list of " + ", ".join(repr(c) for c in spec.choices), value)
    elif (kind == "str" or (kind == "NoneType" and value is not None)) and not isinstance(value, str):
        raise InvalidField(name, "a string", value)
    if kind != "list" and spec.choices and value not in spec.choices:
        raise InvalidField(name, "one of " + ", ".join(repr(c) for c in spec.choices), value)
    return value
