"""A1111's `x/y/z plot` script: its axes, their values (lists and ranges), and the request body of every
cell (pure). Follows `scripts/xyz_grid.py` of AUTOMATIC1111/stable-diffusion-webui v1.10.1; the axis lists
(and so the indices clients send) are A1111's, knsd runs the axes that map onto request fields it honours.
"""

from __future__ import annotations

import csv
import math
import random
import re
from dataclasses import dataclass
from io import StringIO
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.scripts import ScriptCall, script_infos

MAX_CELLS = 64

# label -> (request field, value type); "override:" fields go to override_settings.
AXES: dict[str, tuple[str, str]] = {
    "Nothing": ("", "none"),
    "Seed": ("seed", "int"),
    "Var. seed": ("subseed", "int"),
    "Var. strength": ("subseed_strength", "float"),
    "Steps": ("steps", "int"),
    "Hires steps": ("hr_second_pass_steps", "int"),
    "CFG Scale": ("cfg_scale", "float"),
    "Prompt S/R": ("prompt", "replace"),
    "Sampler": ("sampler_name", "choice"),
    "Hires sampler": ("hr_sampler_name", "choice"),
    "Sigma Churn": ("s_churn", "float"),
    "Sigma min": ("s_tmin", "float"),
    "Sigma max": ("s_tmax", "float"),
    "Sigma noise": ("s_noise", "float"),
    "Schedule type": ("scheduler", "choice"),
    "Eta": ("eta", "float"),
    "Clip skip": ("override:CLIP_stop_at_last_layers", "int"),
    "Denoising": ("denoising_strength", "float"),
    "Hires upscaler": ("hr_upscaler", "choice"),
    "Size": ("", "size"),
}
_BARE = {"Sampler", "Hires sampler", "Schedule type", "Hires upscaler", "Prompt S/R", "Nothing"}
_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?\s*")
_NUM = r"[+-]?\s*\d+(?:\.\d*)?"
_FLOAT_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
_FLOAT_COUNT = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})(?:\s*\[(\d+(?:\.\d*)?)\s*\])?\s*")


@dataclass(frozen=True, slots=True)
class Axis:
    label: str
    values: tuple[Any, ...]
    text: str  # the values as given, for the infotext

    def caption(self, value: Any) -> str:
        if self.label in _BARE:
            return "" if self.label == "Nothing" else str(value)
        if isinstance(value, float):
            value = round(value, 8)
        return f"{self.label}: {value}"


@dataclass(frozen=True, slots=True)
class XYZPlan:
    axes: tuple[Axis, Axis, Axis]
    bodies: tuple[dict[str, Any], ...]  # z, y, x order: x varies fastest
    draw_legend: bool
    include_lone_images: bool
    include_sub_grids: bool
    margin: int
    extra: tuple[tuple[str, Any], ...]  # the grid's infotext keys


def _linspace(start: float, end: float, num: int) -> list[float]:
    if num == 1:
        return [start]
    return [start + (end - start) * i / (num - 1) for i in range(num)]


def _expand(items: list[str], kind: str) -> list[Any]:
    """A1111's ranges: `1-5`, `1-5 (+2)`, `1-10 [4]` (ints truncated), floats alike."""
    out: list[Any] = []
    for item in items:
        whole, counted = (_INT_RANGE, _INT_COUNT) if kind == "int" else (_FLOAT_RANGE, _FLOAT_COUNT)
        m, mc = whole.fullmatch(item), counted.fullmatch(item)
        num = int if kind == "int" else float
        if m is not None:
            start, end = num(m.group(1).replace(" ", "")), num(m.group(2).replace(" ", ""))
            step = num(m.group(3)) if m.group(3) else 1
            if step == 0 or (end - start) / step > MAX_CELLS:
                raise ValueError(item)
            if kind == "int":
                out += list(range(int(start), int(end) + 1, int(step)))
            else:  # numpy.arange(start, end + step, step)
                count = max(0, math.ceil((end + step - start) / step))
                out += [start + i * step for i in range(count)]
        elif mc is not None and mc.group(3):
            start, end = num(mc.group(1).replace(" ", "")), num(mc.group(2).replace(" ", ""))
            values = _linspace(float(start), float(end), min(int(float(mc.group(3))), MAX_CELLS + 1))
            out += [int(v) for v in values] if kind == "int" else values
        else:
            out.append(num(item))
    return out


def _axis(call: ScriptCall, index: int, img2img: bool, csv_mode: bool) -> Axis:
    labels = next(e for e in script_infos() if e["name"] == "x/y/z plot" and e["is_img2img"] == img2img)
    choices: list[str] = labels["args"][0]["choices"]
    where = f"script_args[{index * 3}]"
    chosen = call.args[index * 3]
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(choices):
        label = choices[chosen]
    elif isinstance(chosen, str) and chosen in choices:
        label = chosen
    elif chosen is None:
        label = choices[0]
    else:
        raise InvalidField(where, f"an axis index 0..{len(choices) - 1} of /sdapi/v1/script-info", chosen)
    if label not in AXES:
        runnable = ", ".join(f"{choices.index(a)} {a}" for a in AXES if a in choices)
        raise InvalidField(where, f"an axis knsd plots ({runnable})", f"{chosen} ({label})")
    kind = AXES[label][1]
    if kind == "none":
        return Axis(label, ("",), "")
    text, dropdown = call.args[index * 3 + 1], call.args[index * 3 + 2]
    vwhere = f"script_args[{index * 3 + 1}]"
    if kind == "choice" and not csv_mode and dropdown:
        if not isinstance(dropdown, list) or not all(isinstance(v, str) for v in dropdown):
            raise InvalidField(f"script_args[{index * 3 + 2}]", "a list of names", dropdown)
        items = list(dropdown)
    else:
        if not isinstance(text, str):
            raise InvalidField(vwhere, "comma-separated values", text)
        items = [x.strip() for x in next(csv.reader(StringIO(text), skipinitialspace=True), []) if x.strip()]
    if not items:
        raise InvalidField(vwhere, f"at least one value for axis {label}", text)
    try:
        values: list[Any] = _expand(items, kind) if kind in ("int", "float") else items
        if kind == "size":
            values = [tuple(int(n) for n in v.lower().split("x")) for v in items]
            if any(len(v) != 2 for v in values):
                raise ValueError(text)
    except ValueError as exc:
        raise InvalidField(
            vwhere, f"values for axis {label} (numbers, ranges such as 1-5 (+2) or 1-9 [3])", text
        ) from exc
    given = ", ".join(dropdown) if kind == "choice" and not csv_mode and dropdown else text
    return Axis(label, tuple(values), given)


def _apply(body: dict[str, Any], axis: Axis, value: Any, first_sr: str) -> None:
    field, kind = AXES[axis.label]
    if kind == "none":
        return
    if kind == "size":
        body["width"], body["height"] = value
    elif kind == "replace":
        for key in ("prompt", "negative_prompt"):
            body[key] = (body.get(key) or "").replace(first_sr, value)
    elif field.startswith("override:"):
        body["override_settings"] = {**(body.get("override_settings") or {}), field[9:]: value}
    else:
        body[field] = value


def plan_xyz(body: dict[str, Any], call: ScriptCall, img2img: bool, seed: int) -> XYZPlan:
    """Every cell's body (z outermost, x innermost) with A1111's seed rules."""
    args = call.args
    flags = []
    for i in (9, 10, 11, 12, 13, 14, 15, 17):
        if not isinstance(args[i], bool):
            raise InvalidField(f"script_args[{i}]", "true or false", args[i])
        flags.append(args[i])
    legend, lone, sub_grids, keep_random, vary_x, vary_y, vary_z, csv_mode = flags
    margin = args[16]
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= 500:
        raise InvalidField("script_args[16]", "grid margins from 0 to 500 pixels", margin)
    x, y, z = (_axis(call, i, img2img, csv_mode) for i in range(3))
    cells = len(x.values) * len(y.values) * len(z.values)
    if cells > MAX_CELLS:
        raise InvalidField("script_args", f"axes making at most {MAX_CELLS} cells", f"{cells} cells")
    if not keep_random:
        x, y, z = (_fixed_seeds(a) for a in (x, y, z))
    for axis in (x, y, z):
        if axis.label == "Prompt S/R" and not any(
            axis.values[0] in (body.get(k) or "") for k in ("prompt", "negative_prompt")
        ):
            raise InvalidField("script_args", "a first Prompt S/R value found in the prompt", axis.values[0])
    base = {k: v for k, v in body.items() if k not in ("script_name", "script_args")}
    base.update(batch_size=1, n_iter=1, seed=seed if not keep_random else body.get("seed", -1))
    bodies = []
    for iz, zv in enumerate(z.values):
        for iy, yv in enumerate(y.values):
            for ix, xv in enumerate(x.values):
                cell = dict(base)
                if isinstance(cell["seed"], int) and cell["seed"] != -1:
                    cell["seed"] += (ix if vary_x else 0) + (iy * len(x.values) if vary_y else 0)
                    cell["seed"] += iz * len(x.values) * len(y.values) if vary_z else 0
                for axis, value in ((x, xv), (y, yv), (z, zv)):
                    _apply(cell, axis, value, str(axis.values[0]))
                bodies.append(cell)
    extra: list[tuple[str, Any]] = [("Script", "X/Y/Z plot")]
    for name, axis in (("X", x), ("Y", y), ("Z", z)):
        if axis.label != "Nothing":
            extra += [(f"{name} Type", axis.label), (f"{name} Values", axis.text)]
            if axis.label in ("Seed", "Var. seed") and not keep_random:
                extra.append((f"Fixed {name} Values", ", ".join(str(v) for v in axis.values)))
    return XYZPlan((x, y, z), tuple(bodies), legend, lone, sub_grids, margin, tuple(extra))


def _fixed_seeds(axis: Axis) -> Axis:
    if axis.label not in ("Seed", "Var. seed"):
        return axis
    values = tuple(random.randrange(4294967294) if v in (None, "", -1) else v for v in axis.values)
    return Axis(axis.label, values, axis.text)
