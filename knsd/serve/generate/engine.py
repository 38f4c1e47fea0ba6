"""Running generations on the loaded pipeline, one at a time, with step progress.

The flow of one request (A1111's process_images): `check` refuses what the model cannot serve before the
request waits for its turn; `generate` encodes the prompts as A1111 does (knsd.serve.prompts), draws the
initial noise with variation seeds (knsd.serve.generate.noise) and runs the sampling passes
(knsd.serve.generate.passes), then the hires-fix second pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.infotext import MASK_WEIGHT
from knsd.serve.api.inpaint import PreparedInpaint, prepare
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.samplers import scheduler_for
from knsd.serve.api.sampling import check_sampler_params
from knsd.serve.generate.inpaint import Inpainting, is_inpainting_model
from knsd.serve.generate.noise import SeedSpec
from knsd.serve.generate.passes import Passes, family_name
from knsd.serve.generate.preview import Previewer
from knsd.serve.generate.progress import Generation, Progress
from knsd.serve.generate.tiling import is_compiled, seamless
from knsd.serve.models.families import check_request, check_size
from knsd.serve.models.loader import LoadedModel
from knsd.serve.prompts.conditioning import ClipTower, check_clip_skip, towers_for
from knsd.serve.prompts.guidance import (
    PassConds,
    check_schedule,
    encode_schedule,
    require_plain_prompt,
    schedule_steps,
)
from knsd.serve.prompts.parser import parse_extra_networks


class Engine:
    """Turns validated requests into images; callers must not run two `generate` calls at once."""

    def __init__(
        self,
        model: LoadedModel,
        on_step: Callable[[float], None] | None = None,
        volume: Path | None = None,
    ) -> None:
        """`volume`: the model volume's folder, where live-preview weights are looked for (default: the
        folder holding the model)."""
        self.model = model
        self.progress = Progress()
        self.passes = Passes(model, self.progress, on_step)
        self.previewer = Previewer(
            family_name(model),
            int(model.family.latent_channels),
            volume or model.source.path.parent,
            self.passes.decode,
        )
        self.passes.previewer = self.previewer
        self.addons: Any = None  # knsd.serve.addons.AddOns: LoRA, ControlNet and embeddings, once built
        self._towers: list[ClipTower] | None = None

    def interrupt(self) -> bool:
        """Stop the running generation after its current step; False when nothing runs."""
        if self.progress.job_count == 0:
            return False
        self.passes.interrupt_flag.set()
        return True

    def skip(self) -> bool:
        """A1111's skip: stop the current batch after its current step; later batches still run."""
        if self.progress.job_count == 0:
            return False
        self.passes.skip_flag.set()
        return True

    def towers(self) -> list[ClipTower] | None:
        """The CLIP towers knsd encodes prompts with; None for families encoded by diffusers (SD 3.x)."""
        family = family_name(self.model)
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

    def check(self, req: GenerationRequest) -> None:
        """Refuse, with a 422 naming the field, anything this model cannot serve: the family's size and
        sampler rules, extra networks, clip skip, AND and the prompt syntax of every pass (diffusers'
        `check_inputs`). Cheap: it runs when the request is admitted, before it waits for the pipeline."""
        check_request(self.model, req)
        if req.tiling and is_compiled(self.model):
            raise InvalidField(
                "tiling", "false on a server started with --compile (its graph pads with zeros)", req.tiling
            )
        if family_name(self.model) == "sd3":  # flow-matching Euler has no churn
            check_sampler_params(req.sampling, req.sampler.sampler, frozenset())
            if req.hires is not None:
                check_sampler_params(req.sampling, req.hires.sampler.sampler, frozenset())
        self.previewer.check(req.preview)
        if req.hires is not None:
            check_size(self.model.family, *req.hires.output_size)
            scheduler_for(family_name(self.model), req.hires.sampler, dict(self.passes.base_config), True)
        self._check_extra_networks(req)
        towers = self.towers()
        opts = req.prompt_options
        first_steps = schedule_steps(req.sampler.sampler, req.steps)
        prompts: list[tuple[str, str, int, int | None]] = [
            (req.cond_prompt, req.cond_negative, first_steps, None)
        ]
        if req.hires is not None:
            hr = req.hires
            hr_steps = schedule_steps(hr.sampler.sampler, hr.second_pass_steps or req.steps)
            prompts.append((parse_extra_networks(hr.prompt)[0], hr.negative_prompt, first_steps, hr_steps))
        if towers is None:
            tokenizer = self.model.tokenizers[0] if self.model.tokenizers else None
            for prompt, negative, steps, _ in prompts:
                require_plain_prompt(prompt, "prompt", opts, steps, tokenizer)
                require_plain_prompt(negative, "negative_prompt", opts, steps, tokenizer)
            return
        check_clip_skip(towers, opts)
        old = req.use_old_scheduling
        for prompt, negative, steps, second in prompts:
            check_schedule(prompt, steps, second, "prompt", old)
            check_schedule(negative, steps, second, "negative_prompt", old)

    def _check_extra_networks(self, req: GenerationRequest) -> None:
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
        if towers is None:
            return None  # SD 3.x: diffusers encodes the plain prompts `check` let through
        # SDXL: an all-empty negative prompt is zeros, as A1111's force_zero_negative_prompt.
        zero = family_name(self.model) == "sdxl" and negative == ""
        opts, old = req.prompt_options, req.use_old_scheduling  # old: A1111's "Old prompt editing timelines"
        return PassConds(
            encode_schedule(towers, prompt, steps, opts, hires_steps, use_old_scheduling=old),
            encode_schedule(
                towers, negative, steps, opts, hires_steps, "negative_prompt", zero, use_old_scheduling=old
            ),
            req.batch_size,
            sampler,
        )

    def generate(
        self, req: GenerationRequest, job: str = "txt2img", stop: threading.Event | None = None
    ) -> Generation:
        """Generate batch_size x n_iter images (seamless when tiling) inside the request's add-on session.

        `stop` is this request's own interrupt (its client went away): once set, the run ends after the
        current step as with `interrupt`, and nothing more starts; unlike `interrupt` it cannot reach
        another request."""
        self.check(req)  # admission checks first; a direct caller (bench, tests) gets the same 422s
        if stop is not None and stop.is_set():  # stopped before it began: a script's later parts end here
            self.progress.interrupted = True
            return Generation()
        self.passes.stop = stop
        try:
            with seamless(self.model, req.tiling):
                return self._with_addons(req, job)
        finally:
            self.passes.stop = None

    def _with_addons(self, req: GenerationRequest, job: str) -> Generation:
        from knsd.serve.addons import addons_session

        session = addons_session(self.addons, req)
        if session is None:
            return self._generate(req, job)
        with session:  # LoRA patched before conditioning, restored bit-exactly after; ControlNet units
            self.passes.addon = session
            try:
                out = self._generate(session.prepare_request(req, self.towers() is not None), job)
            finally:
                self.passes.addon = None
            out.images = session.postprocess(out.images)
            out.extra.update(session.extra_generation_params)
            out.detected = list(session.detected_maps)
            return out

    def _prepare_inpaint(self, req: GenerationRequest) -> PreparedInpaint | None:
        """An inpainting request's pixels (mask, crop, fill, overlay), once for all its batches."""
        if req.inpaint is None:
            return None
        return prepare(req.inpaint, req.source_image, req.width, req.height, req.resize_mode)

    def _extra(self, req: GenerationRequest, prepared: PreparedInpaint | None) -> dict[str, Any]:
        """The infotext keys of img2img, inpainting and inpainting models, in A1111's order."""
        extra: dict[str, Any] = dict(prepared.extra) if prepared is not None else {}
        inpainting_model = is_inpainting_model(self.model)
        if req.init_image is not None:
            if req.noise_multiplier != 1:
                extra["Noise multiplier"] = req.noise_multiplier
            if inpainting_model:
                extra[MASK_WEIGHT] = req.mask_weight
        elif inpainting_model and req.hires is not None and (not req.hires.is_latent or req.mask_weight < 1):
            extra[MASK_WEIGHT] = req.mask_weight  # the hires pass builds the masked image from pixels
        return extra

    def _inpainting(self, req: GenerationRequest, prepared: PreparedInpaint | None) -> Inpainting | None:
        if prepared is None or req.inpaint is None:
            return None
        pipe = self.model.img2img
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        shape = (int(self.model.family.latent_channels), req.height // scale, req.width // scale)
        return Inpainting(prepared, shape, req.inpaint.round, req.inpaint.fill, req.sampler.sampler)

    def _generate(self, req: GenerationRequest, job: str = "txt2img") -> Generation:
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
        p, passes = self.progress, self.passes
        prepared = self._prepare_inpaint(req)
        out = Generation(extra=self._extra(req, prepared))
        p.job, p.job_no, p.job_count, p.started, p.interrupted = job, 0, req.n_iter, time.time(), False
        p.sampling_step, p.sampling_steps = 0, req.steps
        p.current_image = None  # A1111 clears the preview when a job begins
        passes.preview = req.preview
        passes.interrupt_flag.clear()
        p.changed()  # the job has begun (a streamed request's first progress event)
        seeds, subseeds = req.seeds, req.subseeds
        try:
            for batch in range(req.n_iter):
                if p.interrupted or passes.stopped():
                    break
                p.job_no, p.sampling_step, p.sampling_steps = batch, 0, req.steps
                passes.skip_flag.clear()
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
                        inpainting = self._inpainting(req, prepared)
                        out.images.extend(passes.img2img(req, spec, conds, inpainting))
                    elif req.hires is None:
                        out.images.extend(passes.txt2img(req, spec, conds, "pil"))
                    else:
                        latents = passes.txt2img(req, spec, conds, "latent")
                        if p.interrupted:
                            out.images.extend(passes.decode(latents))
                            break
                        out.images.extend(passes.hires(req, req.hires, spec, latents, hires_conds))
        finally:
            p.job, p.job_count, p.job_no, p.sampling_step, p.sampling_steps = "", 0, 0, 0, 0
        return out
