"""LoRA files to weight deltas: kohya (`lora_unet_*`, `lora_te*_*`), LoCon (incl. `lora_mid`), diffusers/PEFT.

Ported from A1111's `extensions-builtin/Lora` (network_lora.py, lyco_helpers.py): for each layer
dW = up @ down (or the CP rebuild with `lora_mid`) x scale x multiplier, with scale = the file's `scale`,
else alpha / rank, else 1.0; the te multiplier for text-encoder layers, the unet multiplier for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import InvalidField

# Component names as the file spells them -> the pipeline attribute they patch.
KOHYA_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
}
PEFT_PREFIXES = {
    "unet.": "unet",
    "transformer.": "transformer",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
}
_PEFT_SUFFIXES = (
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    (".alpha", "alpha"),
)
_KOHYA_PARTS = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_mid.weight": "mid",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "alpha": "alpha",
    "scale": "scale",
}
_UNSUPPORTED = ("hada_", "lokr_", "oft_", "diff", "w_norm", "b_norm", "a1.weight", "on_input")


@dataclass(frozen=True, slots=True)
class LoraLayer:
    """One patched layer: `component` is a pipeline attribute, `module` the key (`.` or `_` separated)."""

    component: str
    module: str
    up: Any
    down: Any
    mid: Any | None
    scale: float

    def delta(self, multiplier: float, dyn: int | None, device: Any, dtype: Any) -> Any:
        """dW for this layer at `multiplier` (shape: out x in [x kh x kw]), on `device` in `dtype`."""
        import torch

        up = self.up.to(device=device, dtype=dtype)
        down = self.down.to(device=device, dtype=dtype)
        if dyn is not None:
            up, down = up[:, :dyn], down[:dyn]
        if self.mid is not None:
            mid = self.mid.to(device=device, dtype=dtype)
            if dyn is not None:
                mid = mid[:dyn, :dyn]
            # lyco_helpers.rebuild_cp_decomposition
            w = torch.einsum("n m k l, i n, m j -> i j k l", mid, up.flatten(1), down.flatten(1))
        else:
            w = up.flatten(1) @ down.flatten(1)
            if down.dim() == 4:
                w = w.reshape(up.shape[0], *down.shape[1:])
        return w * (self.scale * multiplier)


@dataclass(frozen=True, slots=True)
class ParsedLora:
    """A LoRA file's layers, on CPU; `nbytes` is what it costs the cache."""

    layers: tuple[LoraLayer, ...]
    nbytes: int

    @property
    def components(self) -> frozenset[str]:
        return frozenset(layer.component for layer in self.layers)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a `.safetensors`, `.pt` or `.ckpt` file, on CPU (pickles: weights only)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError("not a state dict")
    return {k: v for k, v in data.items() if hasattr(v, "shape")}


def _split(key: str) -> tuple[str, str, str] | None:
    """(component, module, part) for one key of either format; None when the key is not a LoRA weight."""
    for prefix, component in KOHYA_PREFIXES.items():
        if key.startswith(prefix):
            name, _, part = key[len(prefix) :].partition(".")
            return (component, name, _KOHYA_PARTS[part]) if part in _KOHYA_PARTS else None
    for prefix, component in PEFT_PREFIXES.items():
        if key.startswith(prefix):
            for suffix, part in _PEFT_SUFFIXES:
                if key.endswith(suffix):
                    module = key[len(prefix) : -len(suffix)]
                    # diffusers' old attention-processor names: attn1.processor.to_q_lora -> attn1.to_q
                    module = re.sub(r"\.processor\.(to_[qkv])_lora$", r".\1", module)
                    module = re.sub(r"\.processor\.to_out_lora$", ".to_out.0", module)
                    return component, module, part
            return None
    return None


def parse_lora(name: str, state: dict[str, Any]) -> ParsedLora:
    """Group a LoRA state dict into layers; unsupported module types are a 422 naming the LoRA."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for key, tensor in state.items():
        split = _split(key)
        if split is None:
            if key.startswith("bundle_emb."):
                continue  # bundled embeddings: not supported, ignored like an unknown key
            if any(marker in key for marker in _UNSUPPORTED):
                raise InvalidField(
                    "prompt",
                    "LoRA/LoCon files (lora_down/lora_up[/lora_mid] or lora_A/lora_B keys)",
                    name,
                    f"LoRA {name!r} uses a module type knsd cannot apply (key {key!r}); "
                    "supported: kohya LoRA/LoCon and diffusers/PEFT LoRA",
                )
            continue
        component, module, part = split
        groups.setdefault((component, module), {})[part] = tensor
    layers: list[LoraLayer] = []
    nbytes = 0
    for (component, module), parts in groups.items():
        if "up" not in parts or "down" not in parts:
            continue
        down = parts["down"].float()
        rank = down.shape[0]
        if "scale" in parts:
            scale = float(parts["scale"])
        elif "alpha" in parts and float(parts["alpha"]) != 0:
            scale = float(parts["alpha"]) / rank  # kohya: alpha 0 or missing means alpha = rank
        else:
            scale = 1.0
        up, mid = parts["up"].float(), parts.get("mid")
        mid = mid.float() if mid is not None else None
        layers.append(LoraLayer(component, module, up, down, mid, scale))
        nbytes += sum(t.numel() * t.element_size() for t in (up, down, mid) if t is not None)
    if not layers:
        raise InvalidField(
            "prompt",
            "a LoRA file with lora_down/lora_up or lora_A/lora_B weights",
            name,
            f"LoRA {name!r} has no LoRA weights knsd recognises",
        )
    return ParsedLora(tuple(layers), nbytes)
