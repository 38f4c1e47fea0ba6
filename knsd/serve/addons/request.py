"""What a request asks of the add-ons: `<lora:…>` tags from the prompt and ControlNet units (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.modules import Module
from knsd.serve.addons.controlnet.units import ControlUnit, parse_units

LORA_KINDS = ("lora", "lyco")  # A1111's Lora extension registers both names


@dataclass(frozen=True, slots=True)
class LoraTag:
    """`<lora:name:te:unet:dyn>`; `alias` is the name as written (A1111 puts it in `Lora hashes`)."""

    name: str
    te: float
    unet: float
    dyn: int | None = None


@dataclass(frozen=True, slots=True)
class AddonRequest:
    loras: tuple[LoraTag, ...] = ()
    units: tuple[ControlUnit, ...] = ()
    numpy_seed: int = 0  # the extension seeds numpy with (seed + subseed) before each preprocessor

    def __bool__(self) -> bool:
        return bool(self.loras or self.units)


def _float(text: str, tag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidField(
            "prompt", "a number for a LoRA multiplier", text, f"{tag}: {text!r} is not a number"
        ) from None
    if not math.isfinite(value):  # nan or inf would give a black image
        raise InvalidField(
            "prompt", "a finite number for a LoRA multiplier", text, f"{tag}: {text!r} is not a finite number"
        )
    return value


def lora_tag(args: list[str]) -> LoraTag:
    """A1111's `extra_networks_lora`: positional te, unet, dyn; named te=, unet=, dyn= override them."""
    tag = "<lora:" + ":".join(args) + ">"
    name = args[0].strip()
    if not name:
        raise InvalidField("prompt", "<lora:NAME:WEIGHT>", tag, f"{tag} has no LoRA name")
    positional = [a for a in args[1:] if "=" not in a]
    named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    te = _float(named.get("te", positional[0] if positional else "1.0"), tag)
    unet_text = named.get("unet", positional[1] if len(positional) > 1 else None)
    unet = _float(unet_text, tag) if unet_text is not None else te
    dyn_text = named.get("dyn", positional[2] if len(positional) > 2 else None)
    dyn = None
    if dyn_text is not None:
        try:
            dyn = int(dyn_text)
        except ValueError:
            raise InvalidField(
                "prompt", "an integer for dyn", dyn_text, f"{tag}: dyn must be an integer"
            ) from None
    return LoraTag(name, te, unet, dyn if dyn else None)


def numpy_seed(body: dict[str, Any], seed: int) -> int:
    """The extension's numpy seed: seed + subseed, where a subseed of -1 (the default) counts as the seed
    (`seed` is the request's resolved seed: A1111's all_seeds[0])."""
    subseed = body.get("subseed")
    sub = seed if subseed in (None, -1) or not isinstance(subseed, int) else max(subseed, 0)
    return (seed + sub) & 0xFFFFFFFF


def parse_addons(
    body: dict[str, Any],
    networks: dict[str, list[list[str]]],
    check: Callable[[Module, str], None],
    seed: int = 0,
) -> AddonRequest:
    """LoRA tags (`lora` and its alias `lyco`, from `parse_extra_networks`) and the enabled ControlNet units;
    `check` refuses modules this server cannot run. Other extra networks (A1111's `<hypernet:...>`, an
    extension's) are 422s: knsd has none, and A1111 would skip an unknown one silently."""
    for kind, found in networks.items():
        if kind not in LORA_KINDS:
            args = ":".join(found[0])
            raise InvalidField(
                "prompt",
                "extra-network tags of LoRAs only (<lora:name:weight>); knsd has no other networks",
                f"<{kind}:{args}>"[:200],
                f"prompt asks for the extra network <{kind}:{args[:100]}>, but knsd serves LoRAs only "
                "(<lora:...>, /sdapi/v1/loras); remove the tag",
            )
    tags = [lora_tag(args) for kind in LORA_KINDS for args in networks.get(kind, [])]
    return AddonRequest(tuple(tags), tuple(parse_units(body, check)), numpy_seed(body, seed))
