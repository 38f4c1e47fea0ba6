"""A1111 ControlNet-extension units (`alwayson_scripts.controlnet.args`), validated up front (pure).

The fields and their defaults are the extension's `ControlNetUnit` (v1.1.455, `internal_controlnet/args.py`).
Out-of-range `processor_res`/`threshold_a`/`threshold_b` fall back to the module's slider default and
are logged in the extension's words (its tests read the log); anything else out of range is a 422.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.fit import RESIZE_ALIASES, RESIZE_MODES
from knsd.serve.addons.controlnet.inputs import region_mask, unit_rgba
from knsd.serve.addons.controlnet.modules import Module, Number, Slider, find_module
from knsd.serve.api.fields import flag, number

log = logging.getLogger("knsd.serve")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS = ("Both", "Low res only", "High res only")
_LEGACY: dict[str, str] = {"input_image": "image", "lowvram": "low_vram", "guidance": "guidance_end"}
# Fields for model kinds knsd does not load, and their defaults (anything else is refused).
_FOREIGN_DEFAULTS: dict[str, Any] = {
    "union_control_type": "Unknown",
    "pulid_mode": "Fidelity",
    "ipadapter_input": None,
    "input_mode": "simple",
}
MAX_ADVANCED_WEIGHTS = 64


@dataclass(frozen=True, slots=True)
class ControlUnit:
    """One enabled unit. `image` is RGBA uint8 (alpha = the mask) or None (img2img: the init image)."""

    index: int  # among the enabled units (infotext `ControlNet {index}`)
    field: str  # its path in the request, for errors
    module: Module
    module_as_sent: str
    model: str
    weight: float
    image: Any
    resize_mode: str
    processor_res: Number  # an int, or a hidden slider's default (0.5) for modules that ignore it
    threshold_a: Number
    threshold_b: Number
    guidance_start: float
    guidance_end: float
    control_mode: str
    pixel_perfect: bool
    save_detected_map: bool = True
    hr_option: str = "Both"
    advanced_weighting: tuple[float, ...] | None = None
    region: Any = None  # effective_region_mask: float32 H x W in [0, 1]
    inpaint_crop_input_image: bool = True

    def infotext(self, model_title: str) -> str:
        """A1111's `ControlNet N` infotext value; "" when a value holds ',' or ':' (as the extension)."""
        values = {
            "Module": self.module_as_sent,
            "Model": model_title,
            "Weight": self.weight,
            "Resize Mode": self.resize_mode,
            "Processor Res": self.processor_res,
            "Threshold A": self.threshold_a,
            "Threshold B": self.threshold_b,
            "Guidance Start": self.guidance_start,
            "Guidance End": self.guidance_end,
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode,
        }
        if any("," in str(v) or ":" in str(v) for v in values.values()):
            return ""
        return ", ".join(f"{k}: {v}" for k, v in values.items())


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...], default: str, field: str) -> str:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]  # API v2 accepted the enum index
    if isinstance(value, str):
        value = RESIZE_ALIASES.get(value, value)
        for option in choices:
            if value.lower() == option.lower():
                return option
    raise InvalidField(f"{field}.{key}", "one of " + ", ".join(repr(c) for c in choices), value)


def _slider(raw: dict[str, Any], key: str, slider: Slider, module: str, field: str, integer: bool) -> Number:
    """The value, or the slider's default when it is out of its bounds (logged unless it was -1)."""
    value: Number = number(raw, key, -1, prefix=field)
    if integer:
        value = int(value)
    if value < slider.min or value > slider.max:
        if value != -1:
            log.info("[%s.%s] Invalid value(%s), using default value %s.", module, key, value, slider.value)
        return slider.value
    return value


def _weights(raw: dict[str, Any], field: str) -> tuple[float, ...] | None:
    value = raw.get("advanced_weighting")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ADVANCED_WEIGHTS:
        raise InvalidField(
            f"{field}.advanced_weighting",
            f"null or a list of at most {MAX_ADVANCED_WEIGHTS} numbers (one per ControlNet residual)",
            value,
        )
    weights = []
    for j, w in enumerate(value):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise InvalidField(f"{field}.advanced_weighting[{j}]", "a finite number", w)
        weights.append(float(w))
    return tuple(weights)


def _foreign(raw: dict[str, Any], field: str) -> None:
    for key, default in _FOREIGN_DEFAULTS.items():
        value = raw.get(key)
        if value is not None and value != default:
            raise InvalidField(
                f"{field}.{key}",
                f"{default!r} (knsd loads no IP-Adapter, PuLID or union models and runs single-image units)",
                value,
            )


def parse_unit(
    raw: dict[str, Any], index: int, field: str, check: Callable[[Module, str], None]
) -> ControlUnit:
    """One enabled unit; `check(module, field)` refuses modules this server cannot run."""
    raw = {_LEGACY.get(str(k), str(k)): v for k, v in raw.items()}
    name = raw.get("module", "none")
    module = find_module(name) if isinstance(name, str) else None
    if module is None:
        raise InvalidField(f"{field}.module", "a module of GET /controlnet/module_list", name)
    check(module, f"{field}.module")
    _foreign(raw, field)
    weight = number(raw, "weight", 1.0, 0, 2, prefix=field)
    start = number(raw, "guidance_start", 0.0, 0, 1, prefix=field)
    end = number(raw, "guidance_end", 1.0, 0, 1, prefix=field)
    if start > end:
        raise InvalidField(f"{field}.guidance_start", f"at most guidance_end ({end})", start)
    model = raw.get("model", "None")
    if not isinstance(model, str):
        raise InvalidField(f"{field}.model", "the name of an installed ControlNet model", model)
    if not module.model_free and model in ("", "None", "none"):
        raise InvalidField(
            f"{field}.model", f"an installed ControlNet model (module {module.name} needs one)", model
        )
    sent = str(name)
    region = None
    if raw.get("effective_region_mask") is not None:
        if module.is_reference:
            raise InvalidField(
                f"{field}.effective_region_mask",
                "null: reference units act through attention everywhere (the extension refuses it too)",
                "an image",
            )
        region = region_mask(f"{field}.effective_region_mask", raw["effective_region_mask"])
    flag(raw, "low_vram", False, prefix=field)  # memory placement only: harmless
    return ControlUnit(
        index=index,
        field=field,
        module=module,
        module_as_sent=sent,
        model=model,
        weight=weight,
        image=unit_rgba(raw, field),
        resize_mode=_choice(raw, "resize_mode", RESIZE_MODES, "Crop and Resize", field),
        processor_res=_slider(raw, "processor_res", module.res, sent, field, True),
        threshold_a=_slider(raw, "threshold_a", module.a, sent, field, False),
        threshold_b=_slider(raw, "threshold_b", module.b, sent, field, False),
        guidance_start=start,
        guidance_end=end,
        control_mode=_choice(raw, "control_mode", CONTROL_MODES, "Balanced", field),
        pixel_perfect=flag(raw, "pixel_perfect", False, prefix=field),
        save_detected_map=flag(raw, "save_detected_map", True, prefix=field),
        hr_option=_choice(raw, "hr_option", HR_OPTIONS, "Both", field),
        advanced_weighting=_weights(raw, field),
        region=region,
        inpaint_crop_input_image=flag(raw, "inpaint_crop_input_image", True, prefix=field),
    )


def parse_units(body: dict[str, Any], check: Callable[[Module, str], None]) -> list[ControlUnit]:
    """The enabled units; bad fields are 422s naming the field."""
    scripts = body.get("alwayson_scripts")
    if scripts is None:
        return []
    if not isinstance(scripts, dict):
        raise InvalidField("alwayson_scripts", "an object keyed by script name", scripts)
    entry = next((v for k, v in scripts.items() if k.lower() == "controlnet"), None)
    if entry is None:
        return []
    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list):
        raise InvalidField("alwayson_scripts.controlnet.args", "a list of ControlNet units", args)
    units: list[ControlUnit] = []
    for i, raw in enumerate(args):
        field = f"alwayson_scripts.controlnet.args[{i}]"
        if not isinstance(raw, dict):
            raise InvalidField(field, "an object (a ControlNet unit)", raw)
        if "guidance" in raw and "guidance_end" in raw:
            raise InvalidField(f"{field}.guidance", "guidance_end or its old name guidance, not both", "both")
        if flag({_LEGACY.get(str(k), str(k)): v for k, v in raw.items()}, "enabled", False, prefix=field):
            units.append(parse_unit(raw, len(units), field, check))
    return units
