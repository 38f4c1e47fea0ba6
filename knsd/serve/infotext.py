"""A1111's generation metadata: the infotext line, the `info` JSON and the echoed parameters (pure)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from knsd import __version__
from knsd.serve.params import GenerationRequest


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What A1111 reports about the loaded checkpoint."""

    name: str
    hash: str


def infotext(req: GenerationRequest, seed: int, model: ModelInfo) -> str:
    """The text A1111 puts in a PNG's `parameters` chunk and in `info.infotexts`."""
    fields: list[tuple[str, Any]] = [
        ("Steps", req.steps),
        ("Sampler", req.sampler.sampler),
        ("Schedule type", req.sampler.schedule),
        ("CFG scale", f"{req.cfg_scale:g}"),
        ("Seed", seed),
        ("Size", f"{req.width}x{req.height}"),
        ("Model hash", model.hash),
        ("Model", model.name),
    ]
    if req.denoising_strength is not None:
        fields.append(("Denoising strength", f"{req.denoising_strength:g}"))
    fields.append(("Version", f"knsd {__version__}"))
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in fields))
    return "\n".join(lines)


def info(req: GenerationRequest, model: ModelInfo, now: float | None = None) -> dict[str, Any]:
    """The object A1111 serialises into the response's `info` string (`Processed.js()`)."""
    seeds = req.seeds
    count = len(seeds)
    return {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * count,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * count,
        "seed": req.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler.sampler,
        "scheduler": req.sampler.schedule,
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model.name,
        "sd_model_hash": model.hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": req.denoising_strength,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [infotext(req, seed, model) for seed in seeds],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(now)),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"knsd {__version__}",
    }


def parameters(req: GenerationRequest) -> dict[str, Any]:
    """The echo of the request's fields that A1111 returns as `parameters`."""
    return {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": req.seed,
        "sampler_name": req.sampler.sampler,
        "scheduler": req.sampler.schedule,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "steps": req.steps,
        "cfg_scale": req.cfg_scale,
        "width": req.width,
        "height": req.height,
        "denoising_strength": req.denoising_strength,
        "init_images": None,
        "send_images": req.send_images,
    }
