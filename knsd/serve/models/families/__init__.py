"""Stable Diffusion model families: what differs between SD 1.x, SD 2.x, SDXL and SD 3.5 (pure, no torch).

Everything the rest of knsd needs to know about a family lives in one `Family` value: the diffusers
pipeline classes, the latent shape rules, the default size and how prompts are encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField, ModelError


@dataclass(frozen=True, slots=True)
class Family:
    """One model family; `name` is one of sd1, sd2, sdxl, sd3."""

    name: str
    label: str
    txt2img_class: str
    img2img_class: str
    # The denoiser component's name in the pipeline: "unet", or "transformer" for SD 3.x's MMDiT.
    denoiser: str = "unet"
    latent_channels: int = 4
    # Width and height must be multiples of this: VAE factor 8, times the MMDiT patch size 2 on SD 3.x.
    size_multiple: int = 8
    default_size: int = 512
    # "epsilon", "v_prediction" (SD 2.x 768-v) or "flow" (SD 3.x rectified flow).
    prediction: str = "epsilon"
    # SDXL and SD 3.x condition on pooled text embeddings too (`pooled_prompt_embeds`).
    pooled: bool = False
    tokenizer_names: tuple[str, ...] = ("tokenizer",)
    text_encoder_names: tuple[str, ...] = ("text_encoder",)


SD1 = Family("sd1", "Stable Diffusion 1.x", "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
SD2 = Family(
    "sd2",
    "Stable Diffusion 2.x",
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    default_size=768,
    prediction="v_prediction",
)
SDXL = Family(
    "sdxl",
    "Stable Diffusion XL",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    default_size=1024,
    pooled=True,
    tokenizer_names=("tokenizer", "tokenizer_2"),
    text_encoder_names=("text_encoder", "text_encoder_2"),
)
SD3 = Family(
    "sd3",
    "Stable Diffusion 3.5",
    "StableDiffusion3Pipeline",
    "StableDiffusion3Img2ImgPipeline",
    denoiser="transformer",
    latent_channels=16,
    size_multiple=16,
    default_size=1024,
    prediction="flow",
    pooled=True,
    tokenizer_names=("tokenizer", "tokenizer_2", "tokenizer_3"),
    text_encoder_names=("text_encoder", "text_encoder_2", "text_encoder_3"),
)
FAMILIES: dict[str, Family] = {f.name: f for f in (SD1, SD2, SDXL, SD3)}
_BY_PIPELINE = {
    "StableDiffusionPipeline": SD1,
    "StableDiffusionImg2ImgPipeline": SD1,
    "StableDiffusionXLPipeline": SDXL,
    "StableDiffusionXLImg2ImgPipeline": SDXL,
    "StableDiffusion3Pipeline": SD3,
    "StableDiffusion3Img2ImgPipeline": SD3,
    # inpainting folders (a 9-channel UNet) load into the family's own pipelines; knsd feeds the extra
    # channels itself (knsd.serve.generate.inpaint)
    "StableDiffusionInpaintPipeline": SD1,
    "StableDiffusionXLInpaintPipeline": SDXL,
}


def family_of_folder(model_index: dict[str, Any], unet_config: dict[str, Any] | None) -> Family:
    """The family of a diffusers folder, from `model_index.json` (and the UNet's cross-attention width)."""
    cls = str(model_index.get("_class_name", ""))
    family = _BY_PIPELINE.get(cls)
    if family is None:
        known = ", ".join(sorted(set(_BY_PIPELINE)))
        raise ModelError(f"unsupported pipeline class {cls!r} in model_index.json (knsd serves {known})")
    if family is SD1 and unet_config and unet_config.get("cross_attention_dim") == 1024:
        return SD2  # OpenCLIP-H context: SD 2.x
    return family


def check_size(family: Family, width: int, height: int, max_grid: int | None = None) -> None:
    """Refuse sizes the family cannot produce: a 422 naming the field and the rule."""
    for key, value in (("width", width), ("height", height)):
        if value % family.size_multiple:
            raise InvalidField(key, f"a multiple of {family.size_multiple} for {family.label} models", value)
        if max_grid is not None and value > max_grid:
            raise InvalidField(key, f"at most {max_grid} for this {family.label} model", value)


def check_request(model: Any, req: Any) -> None:
    """Refuse a request the loaded model's family cannot serve (422 naming the field): size rules, samplers."""
    from knsd.serve.api.samplers import scheduler_for

    family: Family = model.family
    max_side = None
    if family.denoiser == "transformer":  # the MMDiT's position table bounds the latent grid
        config = model.denoiser.config
        if config.get("pos_embed_max_size"):
            max_side = int(config["pos_embed_max_size"]) * int(config["patch_size"]) * 8
    check_size(family, req.width, req.height, max_side)
    scheduler_for(family.name, req.sampler, {}, getattr(req, "init_image", None) is not None)
