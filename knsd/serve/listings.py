"""What A1111's add-on listing endpoints report: LoRAs, embeddings, scripts (empty until add-ons fill them).

Each function is the one place its route asks; the add-ons package (LoRA, embeddings, ControlNet) replaces
the bodies with its own lookups. Shapes are A1111's (`extensions-builtin/Lora`, `modules/api/api.py`).
"""

from __future__ import annotations

from typing import Any

from knsd.serve.addons.routes import addons_of


def lora_items(state: Any) -> list[dict[str, Any]]:
    """`/sdapi/v1/loras`: `[{name, alias, path, metadata}]`."""
    addons = addons_of(state)
    return addons.lora_api() if addons is not None else []


def refresh_loras(state: Any) -> None:
    """`/sdapi/v1/refresh-loras`: rescan the LoRA folder."""
    addons = addons_of(state)
    if addons is not None:
        addons.refresh_loras()


def embedding_items(state: Any) -> dict[str, dict[str, Any]]:
    """`/sdapi/v1/embeddings`: `{loaded: {name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}},
    skipped: {...}}`."""
    addons = addons_of(state)
    if addons is None:
        return {"loaded": {}, "skipped": {}}
    store = addons.embeddings
    return {
        "loaded": {n: e.api() for n, e in store.loaded.items()},
        "skipped": {n: e.api() for n, e in store.skipped.items()},
    }


def refresh_embeddings(state: Any) -> None:
    """`/sdapi/v1/refresh-embeddings`: reload the embeddings (installed before the next generation)."""
    addons = addons_of(state)
    if addons is not None:
        addons.embeddings.refresh()


def script_names(state: Any) -> dict[str, list[str]]:
    """`/sdapi/v1/scripts`: lower-cased script titles per tab, e.g. "controlnet" once it is supported."""
    return {"txt2img": ["controlnet"], "img2img": ["controlnet"]}


def script_info(state: Any) -> list[dict[str, Any]]:
    """`/sdapi/v1/script-info`: `[{name, is_alwayson, is_img2img, args: [...]}]`."""
    return [
        {"name": "controlnet", "is_alwayson": True, "is_img2img": tab, "args": []} for tab in (False, True)
    ]
