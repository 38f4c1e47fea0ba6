"""A1111 and OpenAI request bodies, validated up front into one small request type (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import flag, integer, number, optional_text, require_object, text
from knsd.serve.api.hires import FirstPass, HiresSpec, parse_hires
from knsd.serve.api.images import decode_image
from knsd.serve.api.inpaint import InpaintSpec, parse_inpaint
from knsd.serve.api.policy import check_neutral_fields, generation_options, server_options
from knsd.serve.api.preview import PreviewPlan, preview_plan
from knsd.serve.api.resize import RESIZE_MODES, flatten, resize_image
from knsd.serve.api.samplers import SamplerChoice, resolve_sampler
from knsd.serve.api.sampling import (
    SamplerParams,
    SamplingFields,
    check_sampler_params,
    parse_sampling,
    resolve,
)
from knsd.serve.prompts.chunks import EMPHASIS_MODES
from knsd.serve.prompts.conditioning import PromptOptions
from knsd.serve.prompts.parser import parse_extra_networks, strip_comments

MAX_SEED = 4294967294  # A1111 draws random seeds from randrange(4294967294)
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_NOISE_MULTIPLIER = 1.5  # A1111's initial_noise_multiplier slider


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One txt2img or img2img job, validated; `init_image` set for img2img."""

    prompt: str
    negative_prompt: str
    seed: int
    sampler: SamplerChoice
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    denoising_strength: float | None = None
    init_image: Any = None  # a PIL image, RGB
    send_images: bool = True
    # What knsd encodes: comments stripped, extra-network tags removed (the prompt above keeps the tags,
    # as A1111's infotext does).
    cond_prompt: str = ""
    cond_negative: str = ""
    # `<type:args>` tags of the positive prompt by type, e.g. {"lora": [["name", "0.8"]]} (see prompts.py).
    extra_networks: dict[str, list[list[str]]] = field(default_factory=dict)
    prompt_options: PromptOptions = PromptOptions()
    use_old_scheduling: bool = False
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    hires: HiresSpec | None = None
    styles: tuple[str, ...] = ()
    include_init_images: bool = False
    tiling: bool = False  # A1111's seamless textures (circular padding)
    sampling: SamplingFields = SamplingFields()  # eta, s_churn, ... as given, and their options
    inpaint: InpaintSpec | None = None  # img2img with a mask
    source_image: Any = None  # inpainting: the init image as sent (flattened onto white), before resizing
    resize_mode: int = 0  # img2img: A1111's resize mode of init image and mask
    noise_multiplier: float = 1.0  # img2img: A1111's initial_noise_multiplier (the start noise x this)
    mask_weight: float = 1.0  # inpainting models: A1111's inpainting_mask_weight option
    addons: Any = None  # knsd.serve.addons.AddonRequest (LoRA tags, ControlNet units), set by the routes
    preview: PreviewPlan = PreviewPlan()  # live previews (A1111's options; OpenAI's partial_images)

    @property
    def seeds(self) -> list[int]:
        """Every image's seed: seed, seed+1, ... across all batches; with variation seeds all share one."""
        step = 1 if self.subseed_strength == 0 else 0
        return [self.seed + i * step for i in range(self.batch_size * self.n_iter)]

    @property
    def subseeds(self) -> list[int]:
        """Every image's variation seed: subseed, subseed+1, ... (A1111's all_subseeds)."""
        return [self.subseed + i for i in range(self.batch_size * self.n_iter)]

    @property
    def sampler_params(self) -> SamplerParams:
        """The first pass's sampler parameters (A1111's resolution for this sampler)."""
        return resolve(self.sampling, self.sampler.sampler)

    @property
    def size(self) -> tuple[int, int]:
        """The returned images' (width, height): the hires size when hires fix runs."""
        return self.hires.output_size if self.hires is not None else (self.width, self.height)


def _side(body: dict[str, Any], key: str) -> int:
    allowed = f"a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}"
    value = body.get(key)
    if value is None:
        return 512
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value % 8
        or not MIN_SIDE <= value <= MAX_SIDE
    ):
        raise InvalidField(key, allowed, value)
    return value


def _seed(body: dict[str, Any], key: str = "seed") -> int:
    seed = integer(body, key, -1, -1, MAX_SEED)
    return random.randrange(MAX_SEED) if seed == -1 else seed


def prompt_options(opts: dict[str, Any], field: str = "override_settings") -> PromptOptions:
    """The prompt-encoding settings of merged options, range-checked (errors name `field.key`)."""
    prefix = f"{field}." if field else ""
    clip_skip = opts["CLIP_stop_at_last_layers"]
    if not 1 <= clip_skip <= 12:
        raise InvalidField(prefix + "CLIP_stop_at_last_layers", "an integer between 1 and 12", clip_skip)
    if opts["emphasis"] not in EMPHASIS_MODES:
        raise InvalidField(prefix + "emphasis", "one of " + ", ".join(EMPHASIS_MODES), opts["emphasis"])
    backtrack = opts["comma_padding_backtrack"]
    if not 0 <= backtrack <= 74:
        raise InvalidField(prefix + "comma_padding_backtrack", "an integer between 0 and 74", backtrack)
    return PromptOptions(clip_skip, opts["emphasis"], backtrack, opts["sdxl_clip_l_skip"])


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidField(
            "width",
            f"such that width x height is at most {max_pixels} pixels",
            f"{width}x{height}",
            f"width x height must be at most {max_pixels} pixels (the server's pixel budget), got {width}x{height}",
        )


def parse_txt2img(
    body: dict[str, Any], max_pixels: int, options: dict[str, Any] | None = None, img2img: bool = False
) -> GenerationRequest:
    """Validate an A1111 `/sdapi/v1/txt2img` body; unknown keys are ignored as A1111 does.

    `options` are the server's generation settings (`/sdapi/v1/options`); `override_settings` apply on top.
    Fields knsd cannot honour are refused by name (knsd.serve.api.policy); `img2img` lets img2img's own
    fields through to `parse_img2img`.
    """
    body = require_object(body)
    check_neutral_fields(body, img2img)
    opts = generation_options(
        options if options is not None else server_options(), body.get("override_settings")
    )
    width, height = _side(body, "width"), _side(body, "height")
    _check_pixels(width, height, max_pixels)
    prompt, negative = text(body, "prompt"), text(body, "negative_prompt")
    if opts["enable_prompt_comments"]:
        prompt, negative = strip_comments(prompt), strip_comments(negative)
    # A1111 removes `<lora:...>` tags from the positive prompt only; the negative keeps them as text.
    cond_prompt, networks = parse_extra_networks(prompt)
    if flag(body, "disable_extra_networks", False):
        networks = {}
    styles = body.get("styles")
    if styles is not None and (not isinstance(styles, list) or not all(isinstance(x, str) for x in styles)):
        raise InvalidField("styles", "a list of style names", styles)
    resize_h = integer(body, "seed_resize_from_h", -1, -1, MAX_SIDE)
    resize_w = integer(body, "seed_resize_from_w", -1, -1, MAX_SIDE)
    req = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        seed=_seed(body),
        sampler=resolve_sampler(
            optional_text(body, "sampler_name") or optional_text(body, "sampler_index"),
            optional_text(body, "scheduler"),
        ),
        batch_size=integer(body, "batch_size", 1, 1, 8),
        n_iter=integer(body, "n_iter", 1, 1, 8),
        steps=integer(body, "steps", 50, 1, 150),
        cfg_scale=number(body, "cfg_scale", 7.0, 0.0, 30.0),
        width=width,
        height=height,
        send_images=flag(body, "send_images", True),
        cond_prompt=cond_prompt,
        cond_negative=negative,
        extra_networks=networks,
        prompt_options=prompt_options(opts),
        use_old_scheduling=opts["use_old_scheduling"],
        subseed=_seed(body, "subseed"),
        subseed_strength=number(body, "subseed_strength", 0.0, 0.0, 1.0),
        seed_resize_from_h=resize_h,
        seed_resize_from_w=resize_w,
        styles=tuple(styles or ()),
        preview=preview_plan(opts, body.get("override_settings")),
        mask_weight=opts["inpainting_mask_weight"],
        noise_multiplier=opts["initial_noise_multiplier"],
    )
    req = replace(req, sampling=parse_sampling(body, opts), tiling=flag(body, "tiling", opts["tiling"]))
    check_sampler_params(req.sampling, req.sampler.sampler)
    if flag(body, "enable_hr", False):
        first = FirstPass(req.width, req.height, req.sampler, req.prompt, req.negative_prompt)
        hires = parse_hires(body, first, max_pixels)
        if opts["enable_prompt_comments"]:
            hr_prompt, hr_negative = strip_comments(hires.prompt), strip_comments(hires.negative_prompt)
            hires = replace(hires, prompt=hr_prompt, negative_prompt=hr_negative)
        check_sampler_params(req.sampling, hires.sampler.sampler)
        req = replace(req, hires=hires, denoising_strength=hires.denoising_strength)
    return req


def parse_img2img(
    body: dict[str, Any], max_pixels: int, options: dict[str, Any] | None = None
) -> GenerationRequest:
    """Validate an A1111 `/sdapi/v1/img2img` body (`init_images` required, `denoising_strength`, a `mask`
    and the inpainting fields of knsd.serve.api.inpaint)."""
    body = require_object(body)
    if body.get("enable_hr"):
        raise InvalidField("enable_hr", "false: hires fix is a txt2img feature", body.get("enable_hr"))
    base = parse_txt2img(body, max_pixels, options, img2img=True)
    images = body.get("init_images")
    if not isinstance(images, list) or not images:
        raise InvalidField("init_images", "a non-empty list of base64 images", images)
    if len(images) > 1:
        raise InvalidField("init_images", "a list of exactly one base64 image", f"{len(images)} images")
    inpaint = parse_inpaint(body)
    source = decode_image("init_images[0]", images[0], mode=None)
    return img2img_request(base, body, source, inpaint)


def img2img_request(
    base: GenerationRequest, body: dict[str, Any], image: Any, inpaint: InpaintSpec | None
) -> GenerationRequest:
    """`base` (the txt2img fields of `body`) as img2img from a decoded init image: `resize_mode`,
    `denoising_strength`, `initial_noise_multiplier`, and the inpainting, if any. A transparent init image
    is flattened onto white, as A1111 does."""
    resize_mode = integer(body, "resize_mode", 0, 0, len(RESIZE_MODES) - 1)
    multiplier = number(body, "initial_noise_multiplier", base.noise_multiplier, 0.0, MAX_NOISE_MULTIPLIER)
    strength = number(body, "denoising_strength", 0.75, 0.0, 1.0)
    if strength * base.steps < 1:
        # diffusers runs int(steps x strength) denoising steps; zero of them is not a generation.
        raise InvalidField(
            "denoising_strength",
            f"at least {1 / base.steps:g} with steps={base.steps} (denoising_strength x steps >= 1)",
            strength,
        )
    source = flatten(image)
    return replace(
        base,
        denoising_strength=strength,
        init_image=resize_image(resize_mode, source, base.width, base.height),
        source_image=source if inpaint is not None else None,  # "only masked" crops from the original
        resize_mode=resize_mode,
        inpaint=inpaint,
        noise_multiplier=multiplier,
        include_init_images=flag(body, "include_init_images", False),
    )
