"""Turning a request's units into a ControlNet session (on the pipeline thread): models loaded, inputs
chosen, preprocessors run and maps fitted, the infotext written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.img2img import Img2ImgInput, crop_to_mask, downgraded, unit_input
from knsd.serve.addons.controlnet.modules import find_module
from knsd.serve.addons.controlnet.plan import Geometry, Plan
from knsd.serve.addons.controlnet.session import ControlSession

log = logging.getLogger("knsd.serve")


@dataclass(frozen=True, slots=True)
class Control:
    session: ControlSession
    infotext: dict[str, str]


def build_control(
    addons: Any, request: Any, geometry: Geometry, cfg: bool, source: Img2ImgInput | None, seed: int
) -> Control:
    """The units of `request` (an AddonRequest) ready to sample with."""
    import dataclasses

    import numpy as np

    pipe = addons.pipe
    unet = addons.components["unet"]
    plans: list[Plan] = []
    infotext: dict[str, str] = {}
    for unit in request.units:
        if downgraded(unit.module, source):
            unit = dataclasses.replace(unit, module=find_module("inpaint"), module_as_sent="inpaint")
        image = unit.image
        if image is None:
            if source is None:
                raise InvalidField(f"{unit.field}.image", "a base64 image (txt2img units need one)", None)
            image, mode = unit_input(source, unit.module.is_inpaint)
            unit = dataclasses.replace(unit, resize_mode=mode)
        if (
            source is not None
            and source.only_masked
            and unit.inpaint_crop_input_image
            and not unit.module.is_reference
        ):
            image = crop_to_mask(image, source, unit.resize_mode, geometry.width, geometry.height)
        net, title = None, unit.model
        if not unit.module.model_free:
            model = addons.controlnets.resolve(unit.model, f"{unit.field}.model")
            started = time.perf_counter()
            net = addons.controlnets.load(model, unet)
            addons._observe("addon_load_seconds", time.perf_counter() - started, "controlnet")
            title = model.title
        # The extension seeds numpy before each unit's preprocessor (shuffle draws from it).
        rng = np.random.RandomState(request.numpy_seed)
        log.info("Using preprocessor: %s", unit.module.name)

        def run(module: Any, img: Any, res: int, a: float, b: float, rng: Any = rng) -> Any:
            return addons.catalog.run(module, img, res, a, b, rng)

        plans.append(Plan.build(unit, image, geometry, run, title, net))
        text = unit.infotext(title)
        if text:
            infotext[f"ControlNet {unit.index}"] = text
    xl = "XL" in type(pipe).__name__
    session = ControlSession(plans, unet, pipe.vae, geometry, cfg, xl, seed)
    return Control(session, infotext)
