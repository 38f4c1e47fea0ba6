"""The sampling passes of one loaded model: txt2img, img2img and the hires-fix pass, each a diffusers
pipeline call with knsd's conditioning, A1111's start noise and a per-step callback (progress, interrupt,
skip, prompt-schedule switches, add-on hooks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from knsd.serve.api.hires import HiresSpec
from knsd.serve.api.preview import PreviewPlan
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.samplers import SamplerChoice, scheduler_for
from knsd.serve.api.sampling import SamplerParams, resolve
from knsd.serve.generate.denoised import capturing_denoised
from knsd.serve.generate.denoiser import DenoiserHook, hooked
from knsd.serve.generate.hires import crop_latents, upscale_latents
from knsd.serve.generate.inpaint import Inpainting, image_conditioning, is_inpainting_model
from knsd.serve.generate.noise import SamplerNoise, SeedSpec, first_noise
from knsd.serve.generate.preview import Previewer
from knsd.serve.generate.progress import Progress
from knsd.serve.generate.samplers import OWN_SCHEDULERS, SamplerRun, build
from knsd.serve.generate.upscale import upscale_image
from knsd.serve.models.loader import LoadedModel
from knsd.serve.prompts.guidance import PassConds, uneven_cfg
from knsd.serve.prompts.parser import parse_extra_networks

log = logging.getLogger("knsd.serve")


@dataclass(slots=True)
class Pass:
    """One sampling pass: the pipeline, its conditioning and the call arguments."""

    pipe: Any
    conds: PassConds | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    hires: bool = False  # the hires-fix pass (its `image` is the upscaled latents)
    hook: DenoiserHook | None = None  # an inpainting model's extra channels, inpainting's blending


def _eta(run: SamplerRun, sampler: SamplerChoice) -> dict[str, Any]:
    """DDIM's eta (the pipeline hands it to the scheduler only for DDIM)."""
    return {"eta": run.params.eta} if sampler.sampler == "DDIM" else {}


def _run(params: SamplerParams, spec: SeedSpec) -> SamplerRun:
    """A pass's sampler state: its parameters and the noise its steps will draw."""
    return SamplerRun(params, SamplerNoise(spec.seeds, params.ensd))


def _size_kwargs(pipe: Any, width: int, height: int) -> dict[str, Any]:
    """width/height for img2img pipelines that take them (SD 3.x would otherwise resize to 1024)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return {"width": width, "height": height} if "height" in params and "width" in params else {}


def family_name(model: LoadedModel) -> str:
    """The loaded model's family name ("sd1", "sdxl", "sd3", ...)."""
    family = getattr(model, "family", None)
    return str(getattr(family, "name", "sd1"))


class Passes:
    """Runs the passes of one model; the engine owns it and calls one pass at a time."""

    def __init__(
        self, model: LoadedModel, progress: Progress, on_step: Callable[[float], None] | None
    ) -> None:
        self.model = model
        self.progress = progress
        self.on_step = on_step
        self.schedulers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self.base_config = model.scheduler_config
        self.interrupt_flag = threading.Event()
        self.skip_flag = threading.Event()  # /sdapi/v1/skip: end the current batch, go on with the next
        self.stop: threading.Event | None = None  # the running request's own interrupt (client gone)
        self.addon: Any = None  # the running request's AddonSession
        self.preview = PreviewPlan()  # the running request's live previews
        self.previewer: Previewer | None = None
        self._sigmas: Any = None  # the model's training noise levels (denoiser hooks read timesteps by them)

    def scheduler(self, choice: SamplerChoice, run: SamplerRun, img2img: bool = False) -> Any:
        # The family maps A1111's sampler to its scheduler (SD 3.x: flow-matching ones).
        family = family_name(self.model)
        key = scheduler_for(family, choice, dict(self.base_config), img2img)
        if family != "sd3" and choice.sampler in OWN_SCHEDULERS:
            return build(
                choice.sampler, self.base_config, dict(key[1]), run
            )  # fresh: it holds the pass's noise
        if key not in self.schedulers:
            import diffusers

            cls = getattr(diffusers, key[0])
            self.schedulers[key] = cls.from_config(self.base_config, **dict(key[1]))
        return self.schedulers[key]

    def prompt_kwargs(
        self, req: GenerationRequest, conds: PassConds | None, prompt: str, negative: str
    ) -> dict[str, Any]:
        if conds is not None:
            return conds.pipeline_kwargs(0)
        return {"prompt": [prompt] * req.batch_size, "negative_prompt": [negative] * req.batch_size}

    def txt2img(self, req: GenerationRequest, spec: SeedSpec, conds: PassConds | None, output: str) -> Any:
        pipe = self.model.txt2img
        run = _run(req.sampler_params, spec)
        pipe.scheduler = self.scheduler(req.sampler, run)
        channels = int(self.model.family.latent_channels)
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        latents, generators = first_noise((channels, req.height // scale, req.width // scale), spec)
        run.noise.after_first(generators)
        kwargs = {
            **self.prompt_kwargs(req, conds, req.cond_prompt, req.cond_negative),
            "num_inference_steps": req.steps,
            "guidance_scale": req.cfg_scale,
            **_eta(run, req.sampler),
            "generator": generators,
            "latents": latents.to(device=pipe.device, dtype=pipe.dtype if hasattr(pipe, "dtype") else None),
            "width": req.width,
            "height": req.height,
            "output_type": output,
        }
        hook = self.hook(req, (req.width, req.height), spec.seeds)
        return self.run(Pass(pipe, conds, kwargs, hook=hook), req.steps)

    def img2img(
        self, req: GenerationRequest, spec: SeedSpec, conds: PassConds | None, inpainting: Inpainting | None
    ) -> Any:
        """An img2img pass; with `inpainting`, A1111's masked one: the prepared image, blending while
        sampling and after, the original laid over the decoded images."""
        import torch

        pipe = self.model.img2img
        run = _run(req.sampler_params, spec)
        pipe.scheduler = self.scheduler(req.sampler, run, img2img=True)
        image = req.init_image if inpainting is None else inpainting.prepared.image
        kwargs = {
            **self.prompt_kwargs(req, conds, req.cond_prompt, req.cond_negative),
            "num_inference_steps": req.steps,
            "guidance_scale": req.cfg_scale,
            **_eta(run, req.sampler),
            "generator": [torch.Generator("cpu").manual_seed(int(s)) for s in spec.seeds],
            "image": image,
            "strength": req.denoising_strength,
            **_size_kwargs(pipe, req.width, req.height),
        }
        mask = inpainting.prepared.mask if inpainting is not None else None
        hook = self.hook(req, (req.width, req.height), spec.seeds, [image] * len(spec.seeds), mask)
        if inpainting is None:
            return self.run_with_noise(
                Pass(pipe, conds, kwargs, hook=hook), req.steps, spec, run, req.noise_multiplier
            )
        masked = Pass(pipe, conds, {**kwargs, "output_type": "latent"}, hook=inpainting.hook(hook))
        latents = self.run_with_noise(masked, req.steps, spec, run, req.noise_multiplier, inpainting)
        return inpainting.overlay(self.decode(inpainting.finish(latents)))

    def hook(
        self,
        req: GenerationRequest,
        size: tuple[int, int],
        seeds: tuple[int, ...],
        images: list[Any] | None = None,
        mask: Any = None,
    ) -> DenoiserHook:
        """A pass's denoiser hook; on an inpainting model, with its mask and masked-image channels built
        from `images` (None: txt2img's grey) and `mask` (None: everything regenerates)."""
        import torch

        flow = self.model.family.prediction == "flow"
        if self._sigmas is None and not flow:  # flow matching reads sigma off the timestep itself
            alphas = self.model.txt2img.scheduler.alphas_cumprod.to(torch.float32)
            self._sigmas = ((1 - alphas) / alphas) ** 0.5
        prediction = "flow" if flow else str(self.base_config.get("prediction_type", "epsilon"))
        hook = DenoiserHook(prediction=prediction, sigmas=self._sigmas)
        if not is_inpainting_model(self.model):
            return hook
        pixels = None
        if images is not None:
            vae = self.model.img2img.vae
            processor = self.model.img2img.image_processor
            pixels = processor.preprocess(images).to(device=vae.device, dtype=vae.dtype)
        concat = image_conditioning(
            self.encode_pixels,
            size,
            seeds,
            pixels,
            mask,
            req.mask_weight,
            req.inpaint is None or req.inpaint.round,
        )
        return DenoiserHook(concat, None, prediction, self._sigmas)

    def decode(self, latents: Any) -> list[Any]:
        pipe = self.model.txt2img
        vae = pipe.vae
        scaled = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
        decoded = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        return list(pipe.image_processor.postprocess(decoded, output_type="pil"))

    def encode(self, images: list[Any], seeds: tuple[int, ...]) -> Any:
        return self.encode_pixels(self.model.img2img.image_processor.preprocess(images), seeds)

    def encode_pixels(self, pixels: Any, seeds: tuple[int, ...]) -> Any:
        """Pixels (B, 3, H, W) in [-1, 1] to scaled latents: the VAE's sample drawn with each image's seed."""
        import torch

        vae = self.model.img2img.vae
        pixels = pixels.to(device=vae.device, dtype=vae.dtype)
        parts = []
        for i, seed in enumerate(seeds):
            dist = vae.encode(pixels[i : i + 1]).latent_dist
            parts.append(dist.sample(generator=torch.Generator(vae.device).manual_seed(int(seed))))
        latents = torch.cat(parts)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def hires(
        self, req: GenerationRequest, hr: HiresSpec, spec: SeedSpec, latents: Any, conds: PassConds | None
    ) -> Any:
        """A1111's sample_hr_pass: upscale, then an img2img pass of exactly hr steps."""
        import torch

        if hr.is_latent:
            upscaled = upscale_latents(latents.float(), hr).to(latents.dtype)
        else:
            images = [upscale_image(im, hr.upscaler, hr.target_w, hr.target_h) for im in self.decode(latents)]
            upscaled = crop_latents(self.encode(images, spec.seeds), hr)
        if hr.denoising_strength == 0:
            # A1111's setup_img2img_steps gives 0 steps: the sampler returns the upscaled latents as they are
            self.progress.sampling_step = self.progress.sampling_steps = 0
            return self.decode(upscaled)
        steps = hr.second_pass_steps or req.steps
        # A1111 runs exactly `steps` steps: the tail of a schedule of int(steps / strength) steps.
        total = max(int(steps / min(hr.denoising_strength, 0.999)), steps)
        pipe = self.model.img2img
        sampler = _run(resolve(req.sampling, hr.sampler.sampler), spec)
        pipe.scheduler = self.scheduler(hr.sampler, sampler, img2img=True)
        hr_prompt = parse_extra_networks(hr.prompt)[0]
        kwargs = {
            **self.prompt_kwargs(req, conds, hr_prompt, hr.negative_prompt),
            "num_inference_steps": total,
            "strength": min((steps + 0.5) / total, 1.0),
            "guidance_scale": req.cfg_scale,
            **_eta(sampler, hr.sampler),
            "generator": [torch.Generator("cpu").manual_seed(int(s)) for s in spec.seeds],
            "image": upscaled,
            **_size_kwargs(pipe, *hr.output_size),
        }
        # An inpainting model sees the upscaled image only with a mask weight below 1 (else A1111's grey).
        seen = self.decode(upscaled) if req.mask_weight < 1 and is_inpainting_model(self.model) else None
        hook = self.hook(req, hr.output_size, spec.seeds, seen)
        self.progress.sampling_step, self.progress.sampling_steps = 0, steps
        return self.run_with_noise(Pass(pipe, conds, kwargs, hires=True, hook=hook), steps, spec, sampler)

    def run_with_noise(
        self,
        run: Pass,
        steps: int,
        spec: SeedSpec,
        sampler: SamplerRun,
        multiplier: float = 1.0,
        inpainting: Inpainting | None = None,
    ) -> Any:
        """An img2img pass whose start noise is A1111's first draw over the latents' shape: randn(seed) per
        image, or the variation-seed blend (diffusers would draw it after sampling the VAE encoding), times
        img2img's `multiplier`; the sampler's later noise goes on from those generators (A1111 makes a new
        ImageRNG per pass); `inpainting` fills the encoded latents and keeps them to blend with."""

        def drawn(like: Any) -> Any:
            shape = tuple(int(n) for n in like.shape[1:])
            noise, generators = first_noise((shape[0], shape[1], shape[2]), spec)
            sampler.noise.after_first(generators)
            return noise.to(like) * multiplier

        def start(latents: Any) -> Any:
            return latents if inpainting is None else inpainting.start(latents, spec)

        scheduler = run.pipe.scheduler
        if hasattr(scheduler, "scale_noise"):  # flow matching (SD 3.x): scale_noise(sample, t, noise)
            scale = scheduler.scale_noise
            scheduler.scale_noise = lambda sample, t, _noise: scale(start(sample), t, drawn(sample))
        else:
            add = scheduler.add_noise
            scheduler.add_noise = lambda original, _noise, t: add(start(original), drawn(original), t)
        try:
            return self.run(run, steps)
        finally:
            scheduler.__dict__.pop("scale_noise", None)
            scheduler.__dict__.pop("add_noise", None)

    def stopped(self) -> bool:
        """Whether the running request was stopped (its client went away)."""
        return self.stop is not None and self.stop.is_set()

    def run(self, run: Pass, steps: int) -> Any:
        """Call the pipeline with progress, previews, interrupt and schedule switches in its step callback."""
        p = self.progress
        last = [time.perf_counter()]
        conds = run.conds
        plan, previewer = self.preview, self.previewer
        denoised: list[Any] = [None]  # the latest step's denoised estimate (knsd.serve.generate.denoised)
        shown = [0]  # the step of the last preview in this pass

        def show_preview() -> None:
            if previewer is None or denoised[0] is None or shown[0] == p.sampling_step:
                return
            if not plan.due(p.sampling_step, steps):
                return
            shown[0] = p.sampling_step
            try:
                p.current_image = previewer.render(denoised[0], plan)
                p.preview_id += 1
            except Exception:  # a broken weights file must not fail the generation: say it once, go on
                log.exception("live preview (%s) failed; no more previews in this pass", plan.method)
                shown[0] = -1
                denoised[0] = None

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            if self.on_step is not None:
                self.on_step(now - last[0])
            last[0] = now
            # Second-order schedulers loop over about twice the steps: report progress in request steps.
            loop = int(getattr(pipeline, "num_timesteps", 0) or steps)
            p.sampling_step = min(round((step + 1) * steps / loop), steps)
            if addon is not None:
                addon.on_step_end(step)  # LoRA overlap: patch in a LoRA that finished loading
            if conds is not None and conds.switches():
                conds.step_tensors(pipeline, step + 1, tensors)
            if self.interrupt_flag.is_set() or self.stopped():
                p.interrupted = True
                pipeline._interrupt = True
            if self.skip_flag.is_set():
                pipeline._interrupt = True
            if plan.enabled and shown[0] >= 0:
                show_preview()
            p.changed()
            return tensors

        addon = self.addon
        if addon is not None:
            scheduler = run.pipe.scheduler
            run = addon.apply_to_pass(run)  # a ControlNet pipeline and its control images when units are on
            run.pipe.scheduler = (
                scheduler  # this pass's own (its noise and state), not the one it was built with
            )
        kwargs = dict(run.kwargs, callback_on_step_end=on_step_end)
        if conds is not None:
            kwargs["callback_on_step_end_tensor_inputs"] = conds.tensor_inputs(run.pipe)
        capture = capturing_denoised(run.pipe.scheduler, lambda x0: denoised.__setitem__(0, x0), plan.enabled)
        with capture, hooked(getattr(run.pipe, self.model.family.denoiser), run.hook):
            denoiser = getattr(run.pipe, "unet", None)
            if conds is None or denoiser is None:
                return run.pipe(**kwargs).images
            with uneven_cfg(denoiser, conds.negative.length, conds.positive.length):
                return run.pipe(**kwargs).images
