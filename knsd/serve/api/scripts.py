"""A1111's selectable scripts by `script_name` + `script_args`, in A1111's argument order (pure).

The argument lists and `/sdapi/v1/script-info` entries are A1111 v1.10.1's (`knsd/data/a1111-script-info.json`,
provenance inside). Like A1111, the name is matched case-insensitively against the scripts' titles; unlike
A1111 (which shifts other scripts' arguments into a short list), missing trailing arguments take the UI's
defaults and a longer list is a 422.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.upscalers import BUILTIN_UPSCALERS

# The scripts knsd runs, per tab (A1111 lists them by lower-cased title).
RUNNABLE = {
    "txt2img": ("prompt matrix", "prompts from file or textbox", "x/y/z plot"),
    "img2img": ("prompt matrix", "prompts from file or textbox", "x/y/z plot", "sd upscale"),
}


@cache
def _entries() -> list[dict[str, Any]]:
    text = resources.files("knsd").joinpath("data/a1111-script-info.json").read_text("utf-8")
    entries: list[dict[str, Any]] = json.loads(text)["script_info"]
    return entries


def script_infos() -> list[dict[str, Any]]:
    """`/sdapi/v1/script-info` entries of the scripts knsd runs (txt2img first, then img2img)."""
    return [e for e in _entries() if e["name"] in RUNNABLE["img2img" if e["is_img2img"] else "txt2img"]]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A selected script and its arguments, defaults filled in."""

    name: str
    args: tuple[Any, ...]


def parse_script(body: dict[str, Any], img2img: bool) -> ScriptCall | None:
    """The request's script, or None; an unknown name or a too long `script_args` is a 422."""
    name = body.get("script_name")
    if name is None or name == "":
        return None
    tab = "img2img" if img2img else "txt2img"
    names = RUNNABLE[tab]
    if not isinstance(name, str) or name.lower() not in names:
        allowed = (
            "one of " + ", ".join(repr(n) for n in names) if names else "null (no script runs on " + tab + ")"
        )
        raise InvalidField("script_name", f"{allowed} (knsd's scripts on {tab}, see /sdapi/v1/scripts)", name)
    entry = next(e for e in script_infos() if e["name"] == name.lower() and e["is_img2img"] == img2img)
    defaults = [arg["value"] for arg in entry["args"]]
    args = body.get("script_args")
    if args is None:
        args = []
    if not isinstance(args, list) or len(args) > len(defaults):
        raise InvalidField("script_args", f"a list of at most {len(defaults)} arguments for {name!r}", args)
    return ScriptCall(name.lower(), tuple(args) + tuple(defaults[len(args) :]))


@dataclass(frozen=True, slots=True)
class SdUpscale:
    """`sd upscale`'s arguments: [info (ignored), overlap, upscaler (index or name), scale factor]."""

    overlap: int
    upscaler: str
    scale: float


def sd_upscale_args(call: ScriptCall, tile_w: int, tile_h: int) -> SdUpscale:
    """Check sd upscale's arguments: the upscaler by index into /sdapi/v1/upscalers or by name (any case)."""
    _, overlap, upscaler, scale = call.args
    if isinstance(overlap, float) and overlap.is_integer():
        overlap = int(overlap)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < min(tile_w, tile_h):
        raise InvalidField(
            "script_args[1]", f"a tile overlap from 0 to {min(tile_w, tile_h) - 1} pixels", overlap
        )
    if (
        isinstance(upscaler, int)
        and not isinstance(upscaler, bool)
        and 0 <= upscaler < len(BUILTIN_UPSCALERS)
    ):
        name = BUILTIN_UPSCALERS[upscaler]
    elif isinstance(upscaler, str) and upscaler.lower() in [u.lower() for u in BUILTIN_UPSCALERS]:
        name = next(u for u in BUILTIN_UPSCALERS if u.lower() == upscaler.lower())
    else:
        raise InvalidField(
            "script_args[2]", "an upscaler of /sdapi/v1/upscalers: " + ", ".join(BUILTIN_UPSCALERS), upscaler
        )
    bad = isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
    if bad or not 1.0 <= scale <= 8.0:
        raise InvalidField("script_args[3]", "a scale factor between 1 and 8", scale)
    return SdUpscale(overlap, name, float(scale))
