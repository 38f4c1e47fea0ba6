"""A1111 ControlNet-extension units (`alwayson_scripts.controlnet.args`), validated up front (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.preprocess import PREPROCESSORS, RESIZE_ALIASES, RESIZE_MODES, find_preprocessor
from knsd.serve.api.fields import flag, number

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
_LEGACY = {"input_image": "image", "lowvram": "low_vram", "guidance": "guidance_end", "mask_image": "mask"}


@dataclass(frozen=True, slots=True)
class ControlUnit:
    """One enabled unit; `image` is a decoded RGB PIL image or None (img2img: the init image)."""

    index: int
    module: str
    model: str
    weight: float
    image: Any
    resize_mode: str
    processor_res: int
    threshold_a: float
    threshold_b: float
    guidance_start: float
    guidance_end: float
    control_mode: str
    pixel_perfect: bool
    save_detected_map: bool = True

    def infotext(self, model_title: str) -> str:
        """A1111's `ControlNet N` infotext value (the infotext writer JSON-quotes it)."""
        return (
            f"Module: {self.module}, Model: {model_title}, Weight: {self.weight}, Resize Mode: {self.resize_mode}, "
            f"Processor Res: {self.processor_res}, Threshold A: {self.threshold_a}, Threshold B: {self.threshold_b}, "
            f"Guidance Start: {self.guidance_start}, Guidance End: {self.guidance_end}, "
            f"Pixel Perfect: {self.pixel_perfect}, Control Mode: {self.control_mode}"
        )


def _choice(unit: dict[str, Any], key: str, choices: tuple[str, ...], default: str, field: str) -> str:
    value = unit.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]  # API v2 accepted the enum index
    if isinstance(value, str):
        value = RESIZE_ALIASES.get(value, value)
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
    raise InvalidField(f"{field}.{key}", "one of " + ", ".join(repr(c) for c in choices), value)


def _image(unit: dict[str, Any], field: str) -> Any:
    from knsd.serve.api.images import decode_image

    value = unit.get("image")
    if isinstance(value, dict):
        value = value.get("image")
    elif isinstance(value, list) and value:
        value = value[0]
    if value in (None, ""):
        return None
    return decode_image(f"{field}.image", value)


def parse_units(body: dict[str, Any]) -> list[ControlUnit]:
    """The enabled units with weight > 0 (others change nothing); bad fields are 422s naming the field."""
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
        raw = {_LEGACY.get(k, k): v for k, v in raw.items()}
        if not flag(raw, "enabled", False, prefix=field):
            continue
        name = raw.get("module", "none")
        pre = find_preprocessor(name) if isinstance(name, str) else None
        if pre is None:
            raise InvalidField(f"{field}.module", "one of " + ", ".join(PREPROCESSORS), name)
        weight = number(raw, "weight", 1.0, 0, 2, prefix=field)
        start = number(raw, "guidance_start", 0.0, 0, 1, prefix=field)
        end = number(raw, "guidance_end", 1.0, 0, 1, prefix=field)
        if not 0 <= start <= end <= 1:
            raise InvalidField(
                f"{field}.guidance_start", "0 <= guidance_start <= guidance_end <= 1", [start, end]
            )
        model = raw.get("model", "None")
        if not isinstance(model, str) or model in ("", "None", "none"):
            raise InvalidField(f"{field}.model", "the name of an installed ControlNet model", model)
        res = int(number(raw, "processor_res", -1, prefix=field))
        a, b = number(raw, "threshold_a", -1, prefix=field), number(raw, "threshold_b", -1, prefix=field)
        # -1 or out of the slider's range: the preprocessor's default (as the extension does).
        if pre.resolution is not None and not pre.resolution.min <= res <= pre.resolution.max:
            res = int(pre.resolution.value)
        if pre.a is not None and not pre.a.min <= a <= pre.a.max:
            a = pre.a.value
        if pre.b is not None and not pre.b.min <= b <= pre.b.max:
            b = pre.b.value
        if weight == 0:
            continue
        units.append(
            ControlUnit(
                index=len(units),
                module=pre.name,
                model=model,
                weight=weight,
                image=_image(raw, field),
                resize_mode=_choice(raw, "resize_mode", RESIZE_MODES, "Crop and Resize", field),
                processor_res=res if pre.resolution is not None else 512,
                threshold_a=a,
                threshold_b=b,
                guidance_start=start,
                guidance_end=end,
                control_mode=_choice(raw, "control_mode", CONTROL_MODES, "Balanced", field),
                pixel_perfect=flag(raw, "pixel_perfect", False, prefix=field),
                save_detected_map=flag(raw, "save_detected_map", True, prefix=field),
            )
        )
    return units
