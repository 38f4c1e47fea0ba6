"""Merging LoRA deltas into the model's weights in place, and restoring them bit-exactly.

As A1111 (`networks.network_apply_weights`): the first time a layer is patched its weight is copied aside;
every patch writes backup + sum(dW) and every restore copies the backup back, so no fp16 drift builds up
and a plain request after a LoRA request gives the base pixels again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from knsd.serve.addons.lora import LoraLayer, ParsedLora

log = logging.getLogger("knsd.serve")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3")


@dataclass(frozen=True, slots=True)
class LoraUse:
    """One `<lora:name:te:unet:dyn>` activation with its parsed tensors."""

    name: str
    lora: ParsedLora
    te: float
    unet: float
    dyn: int | None = None


def module_index(root: Any) -> dict[str, Any]:
    """Every weighted submodule of `root`, by dotted name and by kohya's underscore name."""
    index: dict[str, Any] = {}
    for name, module in root.named_modules():
        if getattr(module, "weight", None) is None or not name:
            continue
        index[name] = module
        index[name.replace(".", "_")] = module
    return index


class WeightPatcher:
    """Patches one pipeline's modules; `restore()` puts every patched weight back exactly."""

    def __init__(self, components: dict[str, Any]) -> None:
        self._components = {k: v for k, v in components.items() if v is not None}
        self._index: dict[str, dict[str, Any]] = {}
        self._backups: dict[int, tuple[Any, Any]] = {}
        self._patched: set[int] = set()
        self._deltas: dict[int, Any] = {}
        self.applies = 0  # patch operations so far (a writer of the weights checks none happened meanwhile)

    def _lookup(self, layer: LoraLayer) -> Any | None:
        root = self._components.get(layer.component)
        if root is None:
            return None
        if layer.component not in self._index:
            self._index[layer.component] = module_index(root)
        index = self._index[layer.component]
        found = index.get(layer.module)
        if found is None and layer.component != "unet":
            # transformers 5 dropped CLIPTextModel's `text_model.` level that kohya names carry.
            for prefix in ("text_model.", "text_model_"):
                if layer.module.startswith(prefix):
                    found = index.get(layer.module[len(prefix) :])
                elif found is None:
                    found = index.get(prefix + layer.module)
        if found is None and layer.component == "unet" and _SGM_ANY.match(layer.module):
            config = root.config
            attn = frozenset(i for i, kind in enumerate(config.up_block_types) if "CrossAttn" in kind)
            per = config.layers_per_block
            per = per if isinstance(per, int) else per[0]
            found = index.get(sgm_to_diffusers(layer.module, per, attn))
        return found

    def apply(self, uses: Iterable[LoraUse]) -> int:
        """Add every use's deltas (on top of what is already patched); returns the layers touched."""
        import torch

        self.applies += 1
        pending: dict[int, tuple[Any, Any]] = {}
        missed = 0
        for use in uses:
            for layer in use.lora.layers:
                module = self._lookup(layer)
                if module is None:
                    missed += 1
                    continue
                weight = module.weight
                multiplier = use.te if layer.component in TEXT_COMPONENTS else use.unet
                if multiplier == 0:
                    continue
                delta = layer.delta(multiplier, use.dyn, weight.device, torch.float32)
                if delta.numel() != weight.numel():
                    missed += 1
                    continue
                delta = delta.reshape(weight.shape)
                key = id(weight)
                if key in pending:
                    pending[key] = (weight, pending[key][1] + delta)
                else:
                    pending[key] = (weight, delta)
        if missed:
            log.warning("LoRA: %d layer(s) match no module of this model and were skipped", missed)
        with torch.no_grad():
            for key, (weight, delta) in pending.items():
                if key not in self._backups:
                    self._backups[key] = (weight, weight.detach().clone())
                total = self._deltas[key] + delta if key in self._deltas else delta
                base = self._backups[key][1]
                weight.copy_((base.float() + total).to(weight.dtype))
                self._deltas[key] = total
                self._patched.add(key)
        return len(pending)

    def state(self) -> tuple[bool, int]:
        """Whether a LoRA is merged into the weights now, and how many patch operations ran so far."""
        return bool(self._patched), self.applies

    def restore(self) -> None:
        """Copy the saved base weights back into every patched layer."""
        import torch

        with torch.no_grad():
            for key in self._patched:
                weight, base = self._backups[key]
                weight.copy_(base)
        self._patched.clear()
        self._deltas.clear()


_SGM_ANY = re.compile(r"^(input_blocks|middle_block|output_blocks)_")
_SGM = re.compile(r"^(input_blocks|middle_block|output_blocks)_(\d+)_(\d+)_(.*)$")
_SGM_MID = re.compile(r"^middle_block_(\d+)_(.*)$")
_RESNET = {
    "in_layers_0": "norm1",
    "in_layers_2": "conv1",
    "out_layers_0": "norm2",
    "out_layers_3": "conv2",
    "emb_layers_1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}


def _resnet_inner(rest: str) -> str:
    for old, new in _RESNET.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def sgm_to_diffusers(name: str, layers_per_block: int, attn_blocks: frozenset[int]) -> str:
    """Map one kohya SDXL UNet module name (underscored) to diffusers' underscored name."""
    mid = _SGM_MID.match(name)
    if mid:
        idx, rest = int(mid.group(1)), mid.group(2)
        if idx == 1:
            return f"mid_block_attentions_0_{rest}"
        return f"mid_block_resnets_{idx // 2}_{_resnet_inner(rest)}"
    m = _SGM.match(name)
    if not m:
        return name
    kind, i, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    if kind == "input_blocks":
        if i == 0:
            return f"conv_in{('_' + rest) if rest else ''}"
        block, pos = (i - 1) // (layers_per_block + 1), (i - 1) % (layers_per_block + 1)
        if pos == layers_per_block:
            return f"down_blocks_{block}_downsamplers_0_conv"
        if j == 0:
            return f"down_blocks_{block}_resnets_{pos}_{_resnet_inner(rest)}"
        return f"down_blocks_{block}_attentions_{pos}_{rest}"
    per = layers_per_block + 1
    block, pos = i // per, i % per
    if j == 0:
        return f"up_blocks_{block}_resnets_{pos}_{_resnet_inner(rest)}"
    if j == 1 and block in attn_blocks:
        return f"up_blocks_{block}_attentions_{pos}_{rest}"
    return f"up_blocks_{block}_upsamplers_0_conv"
