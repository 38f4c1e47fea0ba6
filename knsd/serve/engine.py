"""Running generations on the loaded pipeline, one at a time, with step progress.

The flow of one request (A1111's process_images): prompts encoded by knsd as A1111 does
(knsd.serve.conditioning), initial noise with variation seeds (knsd.serve.noise), sampling with per-step
callbacks (progress, interrupt, prompt-schedule switches), then the hires-fix second pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.conditioning import ClipTower, check_clip_skip, towers_for
from knsd.serve.families import check_request, check_size
from knsd.serve.guidance import PassConds, encode_schedule, require_plain_prompt, schedule_steps, uneven_cfg
from knsd.serve.hires import HiresSpec, crop_latents, upscale_image, upscale_latents
from knsd.serve.loader import LoadedModel
from knsd.serve.noise import SeedSpec, first_noise
from knsd.serve.params import GenerationRequest
from knsd.serve.prompts import parse_extra_networks
from knsd.serve.samplers import SamplerChoice, scheduler_for


@dataclass(slots=True)
class Progress:
    """What `/sdapi/v1/progress` reports; written by the worker thread, read by the event loop."""

    job: str = ""
    job_no: int = 0
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    started: float = 0.0
    interrupted: bool = False

    def fraction(self) -> float:
        """A1111's progress: 0.01 + job_no/job_count + step/steps/job_count, capped at 1."""
        if self.job_count == 0:
            return 0.0
        steps = max(self.sampling_steps, 1)
        done = 0.01 + self.job_no / self.job_count + self.sampling_step / steps / self.job_count
        return min(done, 1.0)


class Generated(list[Any]):
    """The images of a request, plus the infotext keys the run added (A1111's extra_generation_params)."""

    def __init__(self, images: Iterable[Any] = ()) -> None:
        super().__init__(images)
        self.extra: dict[str, Any] = {}


@dataclass(slots=True)
class _Pass:
    """One sampling pass: the pipeline, its conditioning and the call arguments."""

    pipe: Any
    conds: PassConds | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _eta(req: GenerationRequest, sampler: SamplerChoice) -> dict[str, Any]:
    """DDIM's eta when the request gave one (diffusers reads it only for DDIM)."""
    return {"eta": req.eta} if req.eta is not None and sampler.sampler == "DDIM" else {}


def _size_kwargs(pipe: Any, width: int, height: int) -> dict[str, Any]:
    """width/height for img2img pipelines that take them (SD 3.x would otherwise resize to 1024)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return {"width": width, "height": height} if "height" in params and "width" in params else {}


def _family(model: LoadedModel) -> str:
    family = getattr(model, "family", None)
    return str(getattr(family, "name", "sd1"))


class Engine:
    """Turns validated requests into images; callers must not run two `generate` calls at once."""

    def __init__(self, model: LoadedModel, on_step: Callable[[float], None] | None = None) -> None:
        self.model = model
        self.progress = Progress()
        self._on_step = on_step
        self._schedulers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._base_config = model.txt2img.scheduler.config
        self._interrupt = threading.Event()
        self._skip = threading.Event()  # /sdapi/v1/skip: end the current batch, go on with the next
        self.addons: Any = None  # knsd.serve.addons (issue 12): LoRA and other extra networks
        self._addon: Any = None  # the running request's AddonSession
        self._towers: list[ClipTower] | None = None

    def interrupt(self) -> bool:
        """Stop the running generation after its current step; False when nothing runs."""
        if self.progress.job_count == 0:
            return False
        self._interrupt.set()
        return True

    def skip(self) -> bool:
        """A1111's skip: stop the current batch after its current step; later batches still run."""
        if self.progress.job_count == 0:
            return False
        self._skip.set()
        return True

    def _scheduler(self, choice: SamplerChoice, img2img: bool = False) -> Any:
        # The family maps A1111's sampler to its scheduler (SD 3.x: flow-matching ones).
        key = scheduler_for(_family(self.model), choice, dict(self._base_config), img2img)
        if key not in self._schedulers:
            import diffusers

            cls = getattr(diffusers, key[0])
            self._schedulers[key] = cls.from_config(self._base_config, **dict(key[1]))
        return self._schedulers[key]

    def towers(self) -> list[ClipTower] | None:
        """The CLIP towers knsd encodes prompts with; None for families encoded by diffusers (SD 3.x)."""
        family = _family(self.model)
        if family == "sd3":
            return None
        if self._towers is None:
            pipe = self.model.txt2img
            tokenizers = getattr(self.model, "tokenizers", None) or [
                pipe.tokenizer,
                getattr(pipe, "tokenizer_2", None),
            ]
            encoders = getattr(self.model, "text_encoders", None) or [
                pipe.text_encoder,
                getattr(pipe, "text_encoder_2", None),
            ]
            self._towers = towers_for(family, list(tokenizers), list(encoders))
        return self._towers

    def check_extra_networks(self, req: GenerationRequest) -> None:
        """`<lora:...>` and other extra-network tags need add-ons; without them they are refused by name."""
        if not req.extra_networks or self.addons is not None:
            return
        kind, args = next(iter(req.extra_networks.items()))
        name = args[0][0] if args and args[0] else ""
        raise InvalidField(
            "prompt",
            f"a prompt without <{kind}:...> tags: no {kind} networks are installed (see /sdapi/v1/loras)",
            f"<{kind}:{name}>",
            f"prompt asks for {kind} {name!r} (<{kind}:{':'.join(args[0])}>), but no {kind} networks are "
            "installed on this server (/sdapi/v1/loras lists them)",
        )

    def _conds(
        self,
        prompt: str,
        negative: str,
        req: GenerationRequest,
        sampler: str,
        steps: int,
        hires_steps: int | None,
    ) -> PassConds | None:
        towers = self.towers()
        opts = req.prompt_options
        if towers is None:
            tokenizer = self.model.tokenizers[0] if self.model.tokenizers else None
            require_plain_prompt(prompt, "prompt", opts, steps, tokenizer)
            require_plain_prompt(negative, "negative_prompt", opts, steps, tokenizer)
            return None
        check_clip_skip(towers, opts)
        # SDXL: an all-empty negative prompt is zeros, as A1111's force_zero_negative_prompt.
        zero = _family(self.model) == "sdxl" and negative == ""
        old = req.use_old_scheduling  # A1111's "Old prompt editing timelines" compat option
        return PassConds(
            encode_schedule(towers, prompt, steps, opts, hires_steps, use_old_scheduling=old),
            encode_schedule(
                towers, negative, steps, opts, hires_steps, "negative_prompt", zero, use_old_scheduling=old
            ),
            req.batch_size,
            sampler,
        )

    def generate(self, req: GenerationRequest, job: str = "txt2img") -> Generated:
        """Generate batch_size x n_iter images inside the request's add-on session (issue 12's hook)."""
        from knsd.serve.addons import addons_session

        check_request(self.model, req)  # the family's size and sampler rules (issue 10)
        if req.hires is not None:
            check_size(self.model.family, *req.hires.output_size)
            scheduler_for(_family(self.model), req.hires.sampler, dict(self._base_config), True)
        self.check_extra_networks(req)
        session = addons_session(self.addons, req)
        if session is None:
            return self._generate(req, job)
        with session:  # LoRA patched before conditioning, restored bit-exactly after; ControlNet units
            self._addon = session
            try:
                out = self._generate(session.prepare_request(req, self.towers() is not None), job)
            finally:
                self._addon = None
            out.extra.update(session.extra_generation_params)
            out.detected = session.detected_maps  # type: ignore[attr-defined]  # ControlNet maps (A1111 appends them)
            return out

    def _generate(self, req: GenerationRequest, job: str = "txt2img") -> Generated:
        """Generate batch_size x n_iter images, seeds as A1111 gives them."""
        import torch

        img2img = req.init_image is not None
        first_steps = schedule_steps(req.sampler.sampler, req.steps)
        conds = self._conds(req.cond_prompt, req.cond_negative, req, req.sampler.sampler, first_steps, None)
        hires_conds = None
        if req.hires is not None:
            hr = req.hires
            hr_prompt = parse_extra_networks(hr.prompt)[0]
            hr_steps = schedule_steps(hr.sampler.sampler, hr.second_pass_steps or req.steps)
            hires_conds = self._conds(
                hr_prompt, hr.negative_prompt, req, hr.sampler.sampler, first_steps, hr_steps
            )
        p = self.progress
        p.job, p.job_no, p.job_count, p.started, p.interrupted = job, 0, req.n_iter, time.time(), False
        p.sampling_step, p.sampling_steps = 0, req.steps
        self._interrupt.clear()
        out = Generated()
        seeds, subseeds = req.seeds, req.subseeds
        try:
            for batch in range(req.n_iter):
                if p.interrupted:
                    break
                p.job_no, p.sampling_step, p.sampling_steps = batch, 0, req.steps
                self._skip.clear()
                part = slice(batch * req.batch_size, (batch + 1) * req.batch_size)
                spec = SeedSpec(
                    tuple(seeds[part]),
                    tuple(subseeds[part]),
                    req.subseed_strength,
                    req.seed_resize_from_h,
                    req.seed_resize_from_w,
                )
                with torch.inference_mode():
                    if img2img:
                        out.extend(self._img2img(req, spec, conds))
                    elif req.hires is None:
                        out.extend(self._txt2img(req, spec, conds, "pil"))
                    else:
                        latents = self._txt2img(req, spec, conds, "latent")
                        if p.interrupted:
                            out.extend(self._decode(latents))
                            break
                        out.extend(self._hires(req, req.hires, spec, latents, hires_conds))
        finally:
            p.job, p.job_count, p.job_no, p.sampling_step, p.sampling_steps = "", 0, 0, 0, 0
        return out

    def _prompt_kwargs(
        self, req: GenerationRequest, conds: PassConds | None, prompt: str, negative: str
    ) -> dict[str, Any]:
        if conds is not None:
            return conds.pipeline_kwargs(0)
        return {"prompt": [prompt] * req.batch_size, "negative_prompt": [negative] * req.batch_size}

    def _txt2img(self, req: GenerationRequest, spec: SeedSpec, conds: PassConds | None, output: str) -> Any:
        pipe = self.model.txt2img
        pipe.scheduler = self._scheduler(req.sampler)
        channels = int(self.model.family.latent_channels)
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        latents, generators = first_noise((channels, req.height // scale, req.width // scale), spec)
        kwargs = {
            **self._prompt_kwargs(req, conds, req.cond_prompt, req.cond_negative),
            "num_inference_steps": req.steps,
            "guidance_scale": req.cfg_scale,
            **_eta(req, req.sampler),
            "generator": generators,
            "latents": latents.to(device=pipe.device, dtype=pipe.dtype if hasattr(pipe, "dtype") else None),
            "width": req.width,
            "height": req.height,
            "output_type": output,
        }
        return self._run(_Pass(pipe, conds, kwargs), req.steps)

    def _img2img(self, req: GenerationRequest, spec: SeedSpec, conds: PassConds | None) -> Any:
        import torch

        pipe = self.model.img2img
        pipe.scheduler = self._scheduler(req.sampler, img2img=True)
        kwargs = {
            **self._prompt_kwargs(req, conds, req.cond_prompt, req.cond_negative),
            "num_inference_steps": req.steps,
            "guidance_scale": req.cfg_scale,
            **_eta(req, req.sampler),
            "generator": [torch.Generator("cpu").manual_seed(int(s)) for s in spec.seeds],
            "image": req.init_image,
            "strength": req.denoising_strength,
            **_size_kwargs(pipe, req.width, req.height),
        }
        return self._run_with_noise(_Pass(pipe, conds, kwargs), req.steps, spec)

    def _decode(self, latents: Any) -> list[Any]:
        pipe = self.model.txt2img
        vae = pipe.vae
        scaled = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
        decoded = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        return list(pipe.image_processor.postprocess(decoded, output_type="pil"))

    def _encode(self, images: list[Any], seeds: tuple[int, ...]) -> Any:
        import torch

        pipe = self.model.img2img
        vae = pipe.vae
        pixels = pipe.image_processor.preprocess(images).to(device=vae.device, dtype=vae.dtype)
        parts = []
        for i, seed in enumerate(seeds):
            dist = vae.encode(pixels[i : i + 1]).latent_dist
            parts.append(dist.sample(generator=torch.Generator(vae.device).manual_seed(int(seed))))
        latents = torch.cat(parts)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def _hires(
        self, req: GenerationRequest, hr: HiresSpec, spec: SeedSpec, latents: Any, conds: PassConds | None
    ) -> Any:
        """A1111's sample_hr_pass: upscale, then an img2img pass of exactly hr steps."""
        import torch

        if hr.is_latent:
            upscaled = upscale_latents(latents.float(), hr).to(latents.dtype)
        else:
            images = [
                upscale_image(im, hr.upscaler, hr.target_w, hr.target_h) for im in self._decode(latents)
            ]
            upscaled = crop_latents(self._encode(images, spec.seeds), hr)
        steps = hr.second_pass_steps or req.steps
        # A1111 runs exactly `steps` steps: the tail of a schedule of int(steps / strength) steps.
        total = max(int(steps / min(hr.denoising_strength, 0.999)), steps)
        pipe = self.model.img2img
        pipe.scheduler = self._scheduler(hr.sampler, img2img=True)
        hr_prompt = parse_extra_networks(hr.prompt)[0]
        kwargs = {
            **self._prompt_kwargs(req, conds, hr_prompt, hr.negative_prompt),
            "num_inference_steps": total,
            "strength": min((steps + 0.5) / total, 1.0),
            "guidance_scale": req.cfg_scale,
            **_eta(req, hr.sampler),
            "generator": [torch.Generator("cpu").manual_seed(int(s)) for s in spec.seeds],
            "image": upscaled,
            **_size_kwargs(pipe, *hr.output_size),
        }
        self.progress.sampling_step, self.progress.sampling_steps = 0, steps
        return self._run_with_noise(_Pass(pipe, conds, kwargs), steps, spec)

    def _run_with_noise(self, run: _Pass, steps: int, spec: SeedSpec) -> Any:
        """An img2img pass whose start noise is A1111's first draw over the latents' shape: randn(seed) per
        image, or the variation-seed blend (diffusers would draw it after sampling the VAE encoding)."""

        def drawn(like: Any) -> Any:
            shape = tuple(int(n) for n in like.shape[1:])
            return first_noise((shape[0], shape[1], shape[2]), spec)[0].to(like)

        scheduler = run.pipe.scheduler
        if hasattr(scheduler, "scale_noise"):  # flow matching (SD 3.x): scale_noise(sample, t, noise)
            scale = scheduler.scale_noise
            scheduler.scale_noise = lambda sample, t, _noise: scale(sample, t, drawn(sample))
        else:
            add = scheduler.add_noise
            scheduler.add_noise = lambda original, _noise, t: add(original, drawn(original), t)
        try:
            return self._run(run, steps)
        finally:
            scheduler.__dict__.pop("scale_noise", None)
            scheduler.__dict__.pop("add_noise", None)

    def _run(self, run: _Pass, steps: int) -> Any:
        """Call the pipeline with progress, interrupt and schedule switches in its step callback."""
        p = self.progress
        last = [time.perf_counter()]
        conds = run.conds

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            if self._on_step is not None:
                self._on_step(now - last[0])
            last[0] = now
            # Second-order schedulers loop over about twice the steps: report progress in request steps.
            loop = int(getattr(pipeline, "num_timesteps", 0) or steps)
            p.sampling_step = min(round((step + 1) * steps / loop), steps)
            if addon is not None:
                addon.on_step_end(step)  # LoRA overlap: patch in a LoRA that finished loading
            if conds is not None and conds.switches():
                conds.step_tensors(pipeline, step + 1, tensors)
            if self._interrupt.is_set():
                p.interrupted = True
                pipeline._interrupt = True
            if self._skip.is_set():
                pipeline._interrupt = True
            return tensors

        addon = self._addon
        if addon is not None:
            run = addon.apply_to_pass(run)  # a ControlNet pipeline and its control images when units are on
        kwargs = dict(run.kwargs, callback_on_step_end=on_step_end)
        if conds is not None:
            kwargs["callback_on_step_end_tensor_inputs"] = conds.tensor_inputs(run.pipe)
        denoiser = getattr(run.pipe, "unet", None)
        if conds is None or denoiser is None:
            return run.pipe(**kwargs).images
        with uneven_cfg(denoiser, conds.negative.length, conds.positive.length):
            return run.pipe(**kwargs).images
