"""Which architecture a single-file checkpoint holds, from its tensor names and shapes.

The rules follow A1111's `guess_model_config_from_state_dict` and diffusers' `infer_diffusers_model_type`
(keys and shapes only; no weights are read). A `.safetensors` file is inspected through its JSON header; a
`.ckpt` is opened with `torch.load(weights_only=True)`, which refuses to unpickle arbitrary code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.models.families import SD1, SD2, SD3, SDXL, Family

Shapes = dict[str, tuple[int, ...]]
_UNET = "model.diffusion_model."
T5_KEY = "text_encoders.t5xxl.transformer.shared.weight"


@dataclass(frozen=True, slots=True)
class Detected:
    """A single file's family and the config variant to build it with (a standard one, or a tiny model)."""

    family: Family
    variant: str
    has_t5: bool = False


def read_shapes(path: Path) -> Shapes:
    """Every tensor's name and shape; nested `state_dict` keys (A1111 `.ckpt` files) are unwrapped."""
    if path.suffix.lower() == ".safetensors":
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100 << 20:  # real headers are a few MB at most
                raise ModelError(f"{path}: not a safetensors file (header length {length})")
            header = json.loads(fh.read(length))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    import torch

    try:
        try:
            state: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) pickles
    except Exception as exc:  # UnpicklingError when the file would run code: never unpickled
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: refused, not a plain weights checkpoint (read with weights only; no code in the file "
            f"is run): {first}"
        ) from exc
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def _width(shapes: Shapes, key: str) -> int:
    return shapes[key][0] if key in shapes else -1


def _sd2_prediction(path: Path) -> str:
    """SD 2.x 768 models predict v, 512-base ones epsilon; A1111's `<checkpoint>.yaml` next to it decides."""
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        return "sd21-v" if "parameterization" in sidecar.read_text() else "sd21-base"
    return "sd21-v"  # the common case, and diffusers' choice


def detect(path: Path, shapes: Shapes) -> Detected:
    """The family and config variant of a checkpoint; unknown or unsupported layouts are a ModelError."""
    conv_in = shapes.get(_UNET + "input_blocks.0.0.weight")
    if any(k.startswith((_UNET + "joint_blocks.", "joint_blocks.")) for k in shapes):
        prefix = _UNET if _UNET + "x_embedder.proj.weight" in shapes else ""
        width = _width(shapes, prefix + "x_embedder.proj.weight")
        has_t5 = T5_KEY in shapes
        dual = prefix + "joint_blocks.0.x_block.attn2.qkv.weight" in shapes
        if width == 1536 and dual:
            return Detected(SD3, "sd35-medium", has_t5)
        if width == 2432:
            return Detected(SD3, "sd35-large", has_t5)
        if width == 32:
            return Detected(SD3, "tiny-sd3", has_t5)
        what = "SD 3.0 medium" if width == 1536 else f"an MMDiT {width} wide"
        raise ModelError(
            f"{path}: {what} is not a known SD 3.5 layout; pass --model-config with its diffusers folder"
        )
    if conv_in is not None and conv_in[1] not in (4, 9):
        raise ModelError(f"{path}: a {conv_in[1]}-channel UNet (instruct-pix2pix) model is not supported")
    # 9 input channels: an inpainting checkpoint (latents, mask, masked-image latents), as A1111 reads it
    inpainting = conv_in is not None and conv_in[1] == 9
    if "conditioner.embedders.1.model.positional_embedding" in shapes:
        if conv_in is not None and conv_in[0] == 320:
            return Detected(SDXL, "sdxl-inpainting" if inpainting else "sdxl-base")
        if conv_in is not None and conv_in[0] == 16 and not inpainting:
            return Detected(SDXL, "tiny-sdxl")
        raise ModelError(f"{path}: an SDXL UNet {conv_in and conv_in[0]} wide is not a known layout")
    if "conditioner.embedders.0.model.positional_embedding" in shapes:
        raise ModelError(f"{path}: SDXL refiner checkpoints are not supported (serve the base model)")
    if conv_in is None:
        raise ModelError(f"{path}: no Stable Diffusion UNet or MMDiT found in the checkpoint")
    context = shapes.get(_UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    open_clip = shapes.get("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight")
    if (context is not None and context[-1] == 1024) or (open_clip is not None and open_clip[1] == 1024):
        # SD 2.x inpainting is the 512 epsilon model fine-tuned (v2-inpainting-inference.yaml)
        return Detected(SD2, "sd2-inpainting" if inpainting else _sd2_prediction(path))
    if conv_in[0] == 320:
        return Detected(SD1, "sd15-inpainting" if inpainting else "sd15")
    if conv_in[0] == 16:
        return Detected(SD1, "tiny-inpaint" if inpainting else "tiny")
    raise ModelError(f"{path}: an SD 1.x UNet {conv_in[0]} wide is not a known layout; pass --model-config")
