"""Add-on modules served per request: LoRA, ControlNet and textual-inversion embeddings (A1111's APIs)."""

from __future__ import annotations

from typing import Any

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
    return AddonSession(addons, request, req.width, req.height, req.cfg_scale > 1, req.init_image, prompts)
