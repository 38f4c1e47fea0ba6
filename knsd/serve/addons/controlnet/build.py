"""Turning a request's units into a ControlNet session (on the pipeline thread): models loaded, inputs
chosen, preprocessors run and maps fitted, the infotext written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.imageops import hwc3
from knsd.serve.addons.controlnet.plan import Geometry, Plan
from knsd.serve.addons.controlnet.session import ControlSession

log = logging.getLogger("knsd.serve")


@dataclass(frozen=True, slots=True)
class Control:
    session: ControlSession
    infotext: dict[str, str]


def _init_rgba(init_image: Any) -> Any:
    """img2img's init image as a unit input: RGB, and an empty mask."""
    import numpy as np

    rgb = hwc3(np.asarray(init_image.convert("RGB"), dtype=np.uint8))
    return np.concatenate([rgb, np.zeros((*rgb.shape[:2], 1), dtype=np.uint8)], axis=2)


def build_control(
    addons: Any, request: Any, geometry: Geometry, cfg: bool, init_image: Any, seed: int
) -> Control:
    """The units of `request` (an AddonRequest) ready to sample with."""
    import dataclasses

    import numpy as np

    pipe = addons.pipe
    unet = addons.components["unet"]
    plans: list[Plan] = []
    infotext: dict[str, str] = {}
    for unit in request.units:
        image = unit.image
        if image is None:
            if init_image is None:
                raise InvalidField(f"{unit.field}.image", "a base64 image (txt2img units need one)", None)
            # The init image is already fitted to the generation size: every resize mode keeps it as it is.
            image = _init_rgba(init_image)
            unit = dataclasses.replace(unit, resize_mode="Just Resize")
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
