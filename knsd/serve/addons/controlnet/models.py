"""ControlNet models from `--controlnet-dir`: listing (A1111's `"<stem> [<hash8>]"` names), resolving a
unit's `model`, loading diffusers and original-layout files onto the UNet's device."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import InvalidField, ModelError
from knsd.serve.addons.files import CONTROLNET_SUFFIXES, AddonFile, legacy_hash, scan
from knsd.serve.addons.rescan import Rescans


@dataclass(frozen=True, slots=True)
class ControlModelFile:
    item: AddonFile
    hash: str

    @property
    def title(self) -> str:
        return f"{self.item.name} [{self.hash}]"


class ControlNetStore:
    """The folder's ControlNet models and a FIFO cache of loaded ones (the extension's default size 2)."""

    def __init__(self, folder: Path, cache_size: int = 2) -> None:
        self.folder = folder
        self.models: dict[str, ControlModelFile] = {}
        self._hashes: dict[tuple[str, float, int], str] = {}
        self._loaded: OrderedDict[tuple[str, float, int], Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._rescans = Rescans()  # unknown names rescan the folder at most once per interval

    def refresh(self) -> None:
        found = scan(self.folder, CONTROLNET_SUFFIXES, dirs_too=True)
        models = {}
        for name, item in found.items():
            if item.key not in self._hashes:
                self._hashes[item.key] = legacy_hash(item.path)
            models[name] = ControlModelFile(item, self._hashes[item.key])
        self.models = models

    def titles(self) -> list[str]:
        return [m.title for m in self.models.values()]

    def resolve(self, wanted: str, field: str) -> ControlModelFile:
        """Exact "name [hash]", else the exact stem, else the shortest stem containing it (case-insensitive)."""
        for attempt in range(2):
            for m in self.models.values():
                if wanted == m.title:
                    return m
            low = wanted.split(" [")[0].lower()
            exact = [m for m in self.models.values() if m.item.name.lower() == low]
            close = sorted(
                (m for m in self.models.values() if low in m.item.name.lower()),
                key=lambda m: len(m.item.name),
            )
            if exact or close:
                return (exact or close)[0]
            if attempt == 0 and self._rescans.due():
                self.refresh()  # a new file on the volume is found without a restart
        installed = ", ".join(self.titles()) or "none installed"
        raise InvalidField(
            field,
            f"an installed ControlNet model ({installed})",
            wanted,
            f"ControlNet model {wanted!r} not found; installed: {installed}",
        )

    def load(self, model: ControlModelFile, unet: Any) -> Any:
        """The ControlNetModel on the UNet's device and dtype (FIFO-cached: hits do not reorder)."""
        key = model.item.key
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        net = load_controlnet(model.item.path, unet).to(device=unet.device, dtype=unet.dtype)
        net.eval()
        with self._lock:
            while len(self._loaded) >= self._cache_size:
                self._loaded.popitem(last=False)
            self._loaded[key] = net
        return net


def _hint_channels(state: dict[str, Any]) -> tuple[int, ...]:
    """conditioning_embedding_out_channels from a diffusers-layout state dict."""
    channels = [state["controlnet_cond_embedding.conv_in.weight"].shape[0]]
    i = 1
    while f"controlnet_cond_embedding.blocks.{i}.weight" in state:
        channels.append(state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0])
        i += 2
    return tuple(channels)


def load_controlnet(path: Path, unet: Any) -> Any:
    """A diffusers folder, or a single file in diffusers layout (its architecture taken from the base UNet)."""
    from diffusers import ControlNetModel

    from knsd.serve.addons.lora import read_state_dict

    try:
        if path.is_dir():
            return ControlNetModel.from_pretrained(str(path), local_files_only=True)
        state = read_state_dict(path)
        if "control_model.input_hint_block.0.weight" in state:
            return _from_ldm(path, state, unet)
        if "controlnet_cond_embedding.conv_in.weight" not in state:
            raise ModelError(
                f"ControlNet {path.name}: neither the diffusers layout (controlnet_cond_embedding.*) "
                "nor the original one (control_model.*); T2I-Adapters, Control-LoRAs and the like are not supported"
            )
        net = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=_hint_channels(state), load_weights_from_unet=False
        )
        net.load_state_dict(state, strict=True)
        return net
    except ModelError:
        raise
    except Exception as exc:  # diffusers/torch raise many kinds for a mismatched file
        raise ModelError(f"could not load ControlNet {path.name} for this model: {exc}") from exc


def _from_ldm(path: Path, state: dict[str, Any], unet: Any) -> Any:
    """An original-layout file (`control_v11p_sd15_canny.pth`): diffusers converts it, offline, with the
    architecture of a ControlNet for this UNet as its config (otherwise it would ask the Hub for one)."""
    import tempfile

    from diffusers import ControlNetModel

    channels = [state["control_model.input_hint_block.0.weight"].shape[0]]
    k = 1
    while f"control_model.input_hint_block.{2 * (k + 1)}.weight" in state:
        channels.append(state[f"control_model.input_hint_block.{2 * (k + 1)}.weight"].shape[0])
        k += 2
    template = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(channels), load_weights_from_unet=False
    )
    with tempfile.TemporaryDirectory(prefix="knsd-controlnet-") as folder:
        template.save_config(folder)
        return ControlNetModel.from_single_file(str(path), config=folder, local_files_only=True)
