"""Add-on modules served per request: LoRA, ControlNet and textual-inversion embeddings (A1111's APIs)."""

from __future__ import annotations

from typing import Any

from knsd.serve.addons.controlnet.img2img import img2img_input
from knsd.serve.addons.controlnet.plan import Geometry
from knsd.serve.addons.files import Folders, default_folders
from knsd.serve.addons.manager import AddOns, AddonSettings
from knsd.serve.addons.request import AddonRequest, parse_addons
from knsd.serve.addons.session import AddonSession

__all__ = [
    "AddOns",
    "AddonRequest",
    "AddonSession",
    "AddonSettings",
    "Folders",
    "default_folders",
    "parse_addons",
]


def addons_session(addons: AddOns | None, req: Any) -> Any:
    """The engine's hook: the request's add-on session, or a no-op one when add-ons are off.

    `req` is a GenerationRequest; its `addons` field is what `AddOns.prepare` returned in the route.
    """
    if addons is None:
        return None
    request = getattr(req, "addons", None)
    if request is None:
        request = addons.prepare({}, getattr(req, "extra_networks", {}) or {})
    prompts = (getattr(req, "prompt", ""), getattr(req, "negative_prompt", ""))
    geometry = Geometry(req.width, req.height, hires_map_size(req.hires) if req.init_image is None else None)
    cfg = req.cfg_scale > 1
    return AddonSession(addons, request, geometry, cfg, img2img_input(req), prompts, req.seed)


def hires_map_size(hr: Any) -> tuple[int, int] | None:
    """The size of a unit's hires map (the extension's target: hr_resize_x/y when both are set, else the
    scaled size; each floored to a multiple of 8)."""
    if hr is None:
        return None
    w, h = (hr.resize_x, hr.resize_y) if hr.resize_x and hr.resize_y else (hr.target_w, hr.target_h)
    return w // 8 * 8, h // 8 * 8
