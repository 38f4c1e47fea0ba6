"""Building the add-ons of a loaded model from the server settings (runs on the pipeline thread)."""

from __future__ import annotations

import logging
from typing import Any

from knsd.serve.addons.files import Folders, default_folders
from knsd.serve.addons.manager import AddOns, AddonSettings

log = logging.getLogger("knsd.serve")


def folders_for(model: Any, settings: Any) -> Folders:
    """The flags' folders, else defaults next to the model (inside the folder of an embedded tiny model)."""
    path = model.source.path
    tiny = str(settings.model).startswith("tiny")
    base = default_folders(path / "model_index.json" if tiny else path)
    return Folders(
        settings.lora_dir or base.lora,
        settings.controlnet_dir or base.controlnet,
        settings.embeddings_dir or base.embeddings,
        settings.controlnet_annotator_models_path or base.annotators,
    )


def create_addons(model: Any, settings: Any, metrics: Any = None) -> AddOns:
    """AddOns for `model`; an embedded tiny model gets the tiny add-ons written into its default folders."""
    folders = folders_for(model, settings)
    if str(settings.model).startswith("tiny"):
        from knsd.serve.addons.tiny import ensure_tiny_addons

        # Only into the default folders: a folder given by flag is the user's.
        flags = {
            "lora": settings.lora_dir,
            "controlnet": settings.controlnet_dir,
            "embedding": settings.embeddings_dir,
        }
        ensure_tiny_addons(folders, model.txt2img, frozenset(k for k, v in flags.items() if v is None))
    addons = AddOns(
        model.txt2img,
        AddonSettings(folders, settings.lora_cache_mb, settings.lora_overlap_steps),
        metrics,
    )
    log.info(
        "add-ons: %d LoRA(s) in %s, %d ControlNet model(s) in %s, %d embedding(s) in %s",
        len(addons.loras),
        folders.lora,
        len(addons.controlnets.models),
        folders.controlnet,
        len(addons.embeddings.loaded),
        folders.embeddings,
    )
    return addons
