"""A1111's generation metadata: the infotext line, the `info` JSON and the echoed parameters (pure)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from knsd import __version__
from knsd.serve.api.hires import hires_infotext
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.sampling import resolve
from knsd.serve.prompts.editing import prompt_schedules

MASK_WEIGHT = "Conditional mask weight"  # an inpainting model's inpainting_mask_weight


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What A1111 reports about the loaded checkpoint."""

    name: str
    hash: str | None  # None until the checkpoint is hashed (the infotext then has no Model hash, as A1111's)


def quote(value: Any) -> str:
    """A1111's infotext quoting: values with `,`, `:` or a newline are written as JSON strings."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _hires_items(req: GenerationRequest) -> list[tuple[str, Any]]:
    hr = req.hires
    if hr is None:
        return []
    items = hires_infotext(hr, req.sampler.schedule)
    at = 1 if hr.sampler_given is not None else 0
    if hr.negative_prompt != req.negative_prompt:
        items.insert(at, ("Hires negative prompt", hr.negative_prompt))
    if hr.prompt != req.prompt:
        items.insert(at, ("Hires prompt", hr.prompt))
    return items


def sampler_items(req: GenerationRequest) -> list[tuple[str, Any]]:
    """Eta / Eta DDIM / Sigma churn, ... as A1111's samplers add them: the first pass's, then any new key of
    the hires pass's sampler."""
    items = list(req.sampler_params.infotext)
    if req.hires is not None:
        seen = {key for key, _ in items}
        items.extend(
            kv for kv in resolve(req.sampling, req.hires.sampler.sampler).infotext if kv[0] not in seen
        )
    return items


def _writes_ensd(req: GenerationRequest) -> bool:
    return req.sampler_params.writes_ensd


def infotext(
    req: GenerationRequest,
    seed: int,
    model: ModelInfo,
    subseed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The text A1111 puts in a PNG's `parameters` chunk and in `info.infotexts` (v1.10 key order)."""
    fields: list[tuple[str, Any]] = [
        ("Steps", req.steps),
        ("Sampler", req.sampler.sampler),
        ("Schedule type", req.sampler.schedule),
        ("CFG scale", req.cfg_scale),  # a float from the API: "7.0", as A1111 writes it
        ("Seed", seed),
        ("Size", f"{req.width}x{req.height}"),
        ("Model hash", model.hash),
        ("Model", model.name),
    ]
    if req.subseed_strength != 0:
        fields.append(("Variation seed", req.subseed if subseed is None else subseed))
        fields.append(("Variation seed strength", req.subseed_strength))
    if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0:
        fields.append(("Seed resize from", f"{req.seed_resize_from_w}x{req.seed_resize_from_h}"))
    if req.denoising_strength is not None:
        fields.append(("Denoising strength", req.denoising_strength))
    extra = dict(extra or {})
    if MASK_WEIGHT in extra:  # A1111 writes it in a fixed place, not with the extra parameters
        fields.append((MASK_WEIGHT, extra.pop(MASK_WEIGHT)))
    if req.prompt_options.clip_skip > 1:
        fields.append(("Clip skip", req.prompt_options.clip_skip))
    if _writes_ensd(req):
        fields.append(("ENSD", req.sampler_params.ensd))
    fields.append(("RNG", "CPU"))  # knsd draws noise on CPU generators (A1111's randn_source CPU)
    if req.tiling:
        fields.append(("Tiling", "True"))
    fields.extend(_hires_items(req))
    fields.extend(extra.items())
    fields.extend(sampler_items(req))
    if req.use_old_scheduling and any(
        prompt_schedules(text, req.steps, None, True) != prompt_schedules(text, req.steps)
        for text in (req.cond_prompt, req.cond_negative)
    ):
        fields.append(("Old prompt editing timelines", True))
    emphasis = req.prompt_options.emphasis
    if emphasis != "Original" and any(c in req.prompt + req.negative_prompt for c in "(["):
        fields.append(("Emphasis", emphasis))
    fields.append(("Version", f"knsd {__version__}"))
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields if value is not None))
    return "\n".join(lines).strip()


def info(
    req: GenerationRequest, model: ModelInfo, now: float | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The object A1111 serialises into the response's `info` string (`Processed.js()`)."""
    seeds, subseeds = req.seeds, req.subseeds
    count = len(seeds)
    extra_params = (
        {k: v for k, v in _hires_items(req)}
        | {k: v for k, v in (extra or {}).items() if k != MASK_WEIGHT}
        | dict(sampler_items(req))
    )
    return {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * count,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * count,
        "seed": req.seed,
        "all_seeds": seeds,
        "subseed": req.subseed,
        "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength,
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
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": req.denoising_strength,
        "extra_generation_params": extra_params,
        "index_of_first_image": 0,
        "infotexts": [
            infotext(req, seed, model, sub, extra) for seed, sub in zip(seeds, subseeds, strict=True)
        ],
        "styles": list(req.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(now)),
        "clip_skip": req.prompt_options.clip_skip,
        "is_using_inpainting_conditioning": MASK_WEIGHT in (extra or {}),
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
        "subseed": req.subseed,
        "subseed_strength": req.subseed_strength,
        "seed_resize_from_h": req.seed_resize_from_h,
        "seed_resize_from_w": req.seed_resize_from_w,
        "styles": list(req.styles),
        "tiling": req.tiling,
        "eta": req.sampling.eta,
        "s_churn": req.sampling.s_churn,
        "s_tmin": req.sampling.s_tmin,
        "s_tmax": req.sampling.s_tmax,
        "s_noise": req.sampling.s_noise,
        **_hires_parameters(req),
    }


def _hires_parameters(req: GenerationRequest) -> dict[str, Any]:
    hr = req.hires
    if req.init_image is not None:
        return {}
    if hr is None:
        return {"enable_hr": False}
    return {
        "enable_hr": True,
        "hr_scale": hr.scale,
        "hr_upscaler": hr.upscaler if hr.upscaler_given else None,
        "hr_second_pass_steps": hr.second_pass_steps,
        "hr_resize_x": hr.resize_x,
        "hr_resize_y": hr.resize_y,
        "hr_sampler_name": hr.sampler_given,
        "hr_scheduler": hr.sampler.schedule,
        "hr_prompt": hr.prompt,
        "hr_negative_prompt": hr.negative_prompt,
    }
