"""The request bodies A1111's `prompt matrix` and `prompts from file or textbox` scripts generate (pure).

Each script becomes a list of ordinary txt2img/img2img bodies, parsed and checked like any request before the
script waits for the pipeline. Follows `scripts/prompt_matrix.py` and `scripts/prompts_from_file.py` of
AUTOMATIC1111/stable-diffusion-webui v1.10.1.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.scripts import ScriptCall

MAX_GENERATIONS = 64  # as batch_size x n_iter: at most 8 x 8 images per request
_SCRIPT_KEYS = ("script_name", "script_args")


@dataclass(frozen=True, slots=True)
class Plan:
    """The bodies to generate, in order; for a prompt matrix, its parts and grid layout."""

    bodies: tuple[dict[str, Any], ...]
    matrix_parts: tuple[str, ...] = ()
    grid_rows: int = 0
    margin: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _base(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in _SCRIPT_KEYS}


def _flag(value: Any, index: int) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(f"script_args[{index}]", "true or false", value)
    return value


def _among(value: Any, index: int, options: tuple[str, ...]) -> str:
    if value not in options:
        raise InvalidField(f"script_args[{index}]", "one of " + ", ".join(repr(o) for o in options), value)
    return str(value)


def count_ok(count: int, what: str) -> None:
    """At most MAX_GENERATIONS images per script."""
    if count > MAX_GENERATIONS:
        raise InvalidField(
            "script_args", f"a script making at most {MAX_GENERATIONS} images", f"{count} images ({what})"
        )


def prompt_matrix(body: dict[str, Any], call: ScriptCall, seed: int, subseed: int) -> Plan:
    """Every combination of the `|`-separated parts after the first, kept in A1111's order (bit n of the
    combination's number selects part n + 1); seeds all `seed`, or seed + i with different seeds."""
    at_start, different, which, delimiter, margin = call.args
    at_start, different = _flag(at_start, 0), _flag(different, 1)
    which = _among(which, 2, ("positive", "negative"))
    joiner = ", " if _among(delimiter, 3, ("comma", "space")) == "comma" else " "
    if isinstance(margin, float) and margin.is_integer():
        margin = int(margin)
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= 500:
        raise InvalidField("script_args[4]", "grid margins from 0 to 500 pixels", margin)
    key = "prompt" if which == "positive" else "negative_prompt"
    text = body.get(key) or ""
    parts = text.split("|")
    count_ok(2 ** (len(parts) - 1), f"{len(parts) - 1} variable parts")
    bodies: list[dict[str, Any]] = []
    for number in range(2 ** (len(parts) - 1)):
        chosen = [p.strip().strip(",") for n, p in enumerate(parts[1:]) if number & (1 << n)]
        prompt = joiner.join([*chosen, parts[0]] if at_start else [parts[0], *chosen])
        i = len(bodies)
        sub = {**_base(body), key: prompt, "seed": seed + (i if different else 0), "subseed": subseed + i}
        bodies.append({**sub, "batch_size": 1, "n_iter": 1})
    return Plan(tuple(bodies), tuple(parts), 1 << ((len(parts) - 1) // 2), margin)


# prompts from file: --tag -> how its value is read; None = changes nothing knsd returns (saving paths,
# display), dropped; sampler_index is not read by A1111 v1.10.1's processing either.
_TAGS: dict[str, Any] = {
    "sd_model": str,
    "outpath_samples": None,
    "outpath_grids": None,
    "prompt_for_display": None,
    "styles": str,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": None,
    "sampler_name": str,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": lambda v: v == "true",
    "tiling": lambda v: v == "true",
    "do_not_save_samples": None,
    "do_not_save_grid": None,
}


def line_fields(line: str) -> dict[str, Any]:
    """A1111's cmdargs: `--prompt`/`--negative_prompt` take the words up to the next `--tag`, other tags one
    value; a line that does not parse is the prompt itself."""
    if "--" not in line:
        return {"prompt": line}
    try:
        args = shlex.split(line)
        out: dict[str, Any] = {}
        pos = 0
        while pos < len(args):
            tag = args[pos]
            if not tag.startswith("--") or pos + 1 >= len(args):
                raise ValueError(tag)
            name = tag[2:]
            if name in ("prompt", "negative_prompt"):
                words = [args[pos + 1]]
                pos += 2
                while pos < len(args) and not args[pos].startswith("--"):
                    words.append(args[pos])
                    pos += 1
                out[name] = " ".join(words)
                continue
            if name not in _TAGS:
                raise ValueError(name)
            reader = _TAGS[name]
            if reader is not None:
                out[name] = reader(args[pos + 1])
            pos += 2
        return out
    except ValueError:
        return {"prompt": line}


def prompts_from_file(body: dict[str, Any], call: ScriptCall, seed: int, per_request: int) -> Plan:
    """One body per non-empty line; the line's prompt put before or after the request's. With "iterate
    seed", each line starts `per_request` (batch_size x n_iter) seeds after the previous one."""
    iterate, same_seed, position, text = call.args
    iterate, same_seed = _flag(iterate, 0), _flag(same_seed, 1)
    position = _among(position, 2, ("start", "end"))
    if not isinstance(text, str):
        raise InvalidField("script_args[3]", "the prompt lines as one string", text)
    lines = [x for x in (line.strip() for line in text.splitlines()) if x]
    given = body.get("seed")
    current = seed if (iterate or same_seed) and given in (None, -1) else given
    base = _base(body)
    bodies: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        fields = line_fields(line)
        if "styles" in fields:
            raise InvalidField(
                f"script_args[3] line {i + 1}", "a line without --styles (use the styles field)", line
            )
        sub = {**base, "seed": current}
        if "sd_model" in fields:
            sub["override_settings"] = {
                **(base.get("override_settings") or {}),
                "sd_model_checkpoint": fields.pop("sd_model"),
            }
        for key in ("prompt", "negative_prompt"):
            ours, theirs = fields.pop(key, None), base.get(key) or ""
            if ours:
                sub[key] = (
                    (f"{ours} {theirs}" if position == "start" else f"{theirs} {ours}") if theirs else ours
                )
        sub.update(fields)
        bodies.append(sub)
        if iterate and isinstance(current, int) and current != -1:
            current += per_request
    count_ok(len(bodies), f"{len(lines)} lines")
    return Plan(tuple(bodies))
