"""Tiny add-ons for tests and the demo, built deterministically from a loaded tiny model.

- `tiny-lora.safetensors`: a kohya LoRA (with LoCon conv layers) over the UNet and text encoder(s);
- `tiny-canny.safetensors`: a ControlNet (diffusers layout, single file) made with `from_unet`, its hint
  encoder and zero convolutions given random weights so that the control image steers the result;
- `tiny-emb.safetensors`: a two-vector textual-inversion embedding in A1111's `emb_params` layout
  (`clip_l` + `clip_g` for SDXL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knsd.serve.addons.files import Folders

SEED = 1212
# Stored in the ControlNet file's metadata; bump when its build changes, so a cache written by an older
# knsd gets the new one (the hint encoder's initialisation changed in version 2).
CONTROLNET_VERSION = "2"
LORA_NAME, CONTROLNET_NAME, EMBEDDING_NAME = "tiny-lora", "tiny-canny", "tiny-emb"
KINDS = frozenset({"lora", "controlnet", "embedding"})
_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "conv2")
_TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _generator() -> Any:
    import torch

    return torch.Generator().manual_seed(SEED)


def lora_state_dict(
    components: dict[str, Any], rank: int = 4, alpha: float = 2.0, peft: bool = False
) -> dict[str, Any]:
    """A LoRA over every Linear/conv layer kohya (+ LoCon) targets, kohya keys or diffusers/PEFT keys."""
    import torch

    gen = _generator()
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    if components.get("text_encoder_2") is None:
        prefixes["text_encoder"] = "lora_te_"
    out: dict[str, Any] = {}
    for component, root in components.items():
        if root is None or component not in prefixes:
            continue
        targets = _UNET_TARGETS if component == "unet" else _TE_TARGETS
        for name, module in root.named_modules():
            if not any(name.endswith(t) for t in targets) or getattr(module, "weight", None) is None:
                continue
            w = module.weight
            shape_in = (w.shape[1], *w.shape[2:]) if w.dim() == 4 else (w.shape[1],)
            ones = (1, 1) if w.dim() == 4 else ()
            down = torch.randn((rank, *shape_in), generator=gen) * 0.5
            up = torch.randn((w.shape[0], rank, *ones), generator=gen) * 0.5
            if component != "unet" and not name.startswith("text_model."):
                name = "text_model." + name  # the names kohya files use (transformers 4 layout)
            if peft:
                key = f"{component}.{name}"
                out[f"{key}.lora_A.weight"], out[f"{key}.lora_B.weight"] = down, up
                out[f"{key}.alpha"] = torch.tensor(alpha)
            else:
                key = prefixes[component] + name.replace(".", "_")
                out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down, up
                out[f"{key}.alpha"] = torch.tensor(alpha)
    return {k: v.contiguous() for k, v in out.items()}


def write_lora(path: Path, components: dict[str, Any], peft: bool = False) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ss_output_name": path.stem, "ss_network_module": "networks.lora", "ss_network_dim": "4"}
    save_file(lora_state_dict(components, peft=peft), str(path), metadata=meta)
    return path


def controlnet_model(unet: Any) -> Any:
    """A ControlNet from the UNet whose result depends on its control image.

    A fresh `from_unet` ControlNet adds nothing (zero convolutions), and with PyTorch's default init its
    hint encoder barely passes the control image on: residuals would then come from the latents alone.
    So the hint encoder gets He-initialised weights and the zero convolutions small random ones, which
    makes the control image's share of the residuals comparable to the latents' (as in a trained one)."""
    import math

    import torch
    from diffusers import ControlNetModel

    with torch.random.fork_rng():
        torch.manual_seed(SEED)  # from_unet initialises the hint encoder from the global generator
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 16)).float()
    gen = _generator()
    hint = net.controlnet_cond_embedding
    with torch.no_grad():
        for conv in (hint.conv_in, *hint.blocks):
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
            conv.bias.zero_()
        for conv in (*net.controlnet_down_blocks, net.controlnet_mid_block, hint.conv_out):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
    return net


def write_controlnet(path: Path, unet: Any) -> Path:
    """Save as one safetensors file with diffusers keys (or as a diffusers folder if `path` has no suffix)."""
    from safetensors.torch import save_file

    net = controlnet_model(unet)
    if not path.suffix:
        net.save_pretrained(str(path), safe_serialization=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"knsd_tiny_version": CONTROLNET_VERSION}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    return path


def _current_controlnet(path: Path) -> bool:
    """The tiny ControlNet at `path` exists and was built by this version of its builder."""
    from safetensors import safe_open

    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("knsd_tiny_version") == CONTROLNET_VERSION


def write_embedding(path: Path, text_encoder: Any, vectors: int = 2, text_encoder_2: Any = None) -> Path:
    """An A1111-style embedding: `emb_params` (vectors x width), or `clip_l` + `clip_g` for SDXL."""
    import torch
    from safetensors.torch import save_file

    gen = _generator()

    def params(encoder: Any) -> Any:
        width = encoder.get_input_embeddings().weight.shape[1]
        return (torch.randn((vectors, width), generator=gen) * 2.0).contiguous()

    state = {"emb_params": params(text_encoder)}
    if text_encoder_2 is not None:
        state = {"clip_l": state["emb_params"], "clip_g": params(text_encoder_2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def ensure_tiny_addons(folders: Folders, pipe: Any, kinds: frozenset[str] = KINDS) -> None:
    """Write the tiny add-ons of `kinds` into their folders unless they are already there."""
    components = {k: getattr(pipe, k, None) for k in ("unet", "text_encoder", "text_encoder_2")}
    lora = folders.lora / f"{LORA_NAME}.safetensors"
    if "lora" in kinds and not lora.exists():
        write_lora(lora, components)
    cn = folders.controlnet / f"{CONTROLNET_NAME}.safetensors"
    if "controlnet" in kinds and not _current_controlnet(cn) and getattr(pipe, "unet", None) is not None:
        write_controlnet(cn, pipe.unet)
    emb = folders.embeddings / f"{EMBEDDING_NAME}.safetensors"
    if "embedding" in kinds and not emb.exists():
        write_embedding(emb, pipe.text_encoder, text_encoder_2=getattr(pipe, "text_encoder_2", None))
