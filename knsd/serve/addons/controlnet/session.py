"""One request's ControlNet units on the pipeline thread, as the extension runs them around A1111's passes.

- Units with a ControlNet model run through diffusers' ControlNet pipelines; each unit gets a view of its
  model that scales its residuals (`residuals.py`) and turns them off outside its guidance window, judged
  as A1111 does: the model call of step i sees the fraction max(i - 1, 0) / steps of its pass.
- In a txt2img hires run every unit also acts in the hires pass (`hr_option` "Both", the default, or "High
  res only") with its map fitted to the hires size; "Low res only" / "High res only" leave it out of a pass.
- Reference, tile_colorfix and inpaint_only units act inside the UNet call (`reference.py`, `latents.py`),
  on the VAE latent of their map in the running pass.
- After decoding, inpaint_only pastes the original back and recolor sets the brightness (`postprocess.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from knsd.serve.addons.controlnet.latents import abar_at, colorfix, inpaint_restore, latent_mask, q_sample
from knsd.serve.addons.controlnet.plan import Geometry, Plan
from knsd.serve.addons.controlnet.postprocess import paste_back, paste_mask, recolor
from knsd.serve.addons.controlnet.reference import (
    AdainHook,
    AttentionHook,
    Machine,
    adain_blocks,
    attention_blocks,
)
from knsd.serve.addons.controlnet.residuals import unit_view

log = logging.getLogger("knsd.serve")
_RESIDUAL_KWARGS = ("down_block_additional_residuals", "mid_block_additional_residual")


@dataclasses.dataclass
class Clock:
    """Where sampling is: which pass, which diffusers loop iteration, and the pipeline running it."""

    hires: bool = False
    loop: int = 0
    pipe: Any = None

    def fraction(self) -> float:
        """A1111's sampling_step / sampling_steps while the current step's model calls run."""
        order = int(getattr(getattr(self.pipe, "scheduler", None), "order", 1) or 1)
        loops = int(getattr(self.pipe, "num_timesteps", 0) or 0)
        total = max(math.ceil(loops / order), 1)
        return max(self.loop // order - 1, 0) / total


class ControlSession:
    """Built by the add-on session with the units' plans; `enter` hooks the UNet, `exit` restores it."""

    def __init__(
        self, plans: list[Plan], unet: Any, vae: Any, geometry: Geometry, cfg: bool, xl: bool, seed: int
    ):
        self.plans, self.unet, self.vae = plans, unet, vae
        self.geometry, self.cfg, self.xl = geometry, cfg, xl
        self.hires_run = geometry.hires is not None
        self.clock = Clock()
        self.machine = Machine()
        self._seed = seed
        self._generator: Any = None
        self._handles: list[Any] = []
        self._processors: list[tuple[Any, Any]] = []
        self._attention: list[AttentionHook] = []
        self._adain: list[AdainHook] = []
        self._regions: dict[int, Any] = {}

    # -- hooks ---------------------------------------------------------------------------------------------
    def enter(self) -> None:
        import torch

        self._generator = torch.Generator("cpu").manual_seed(int(self._seed))
        references = [p for p in self.plans if p.unit.module.is_reference]
        if references:
            names = {p.unit.module.name for p in references}
            if names & {"reference_only", "reference_adain+attn"}:
                blocks = attention_blocks(self.unet)
                for i, block in enumerate(blocks):
                    hook = AttentionHook(block.attn1.processor, i / len(blocks), self.machine)
                    self._processors.append((block.attn1, block.attn1.processor))
                    block.attn1.set_processor(hook)
                    self._attention.append(hook)
            if names & {"reference_adain", "reference_adain+attn"}:
                for module, rank in adain_blocks(self.unet):
                    adain = AdainHook(rank, self.machine)
                    self._handles.append(module.register_forward_hook(adain))
                    self._adain.append(adain)
        if references or any(self._corrects(p) for p in self.plans):
            self._handles.append(self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True))
            self._handles.append(self.unet.register_forward_hook(self._after_unet, with_kwargs=True))

    def exit(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for attn, processor in self._processors:
            attn.set_processor(processor)
        self._processors.clear()

    def _hooks(self) -> list[AttentionHook | AdainHook]:
        return [*self._attention, *self._adain]

    @staticmethod
    def _corrects(plan: Plan) -> bool:
        name = plan.unit.module.name
        return "colorfix" in name or name == "inpaint_only"

    # -- passes --------------------------------------------------------------------------------------------
    def apply(self, run: Any) -> Any:
        """The pass with the ControlNet units that act in it attached (a ControlNet pipeline)."""
        hires = bool(getattr(run, "hires", False))
        self.clock = Clock(hires=hires, loop=0, pipe=run.pipe)
        nets = [p for p in self.plans if p.net is not None and p.allowed(hires, self.hires_run)]
        if not nets:
            return run
        pipe = self._pipeline(run.pipe, [self._view(p) for p in nets])
        self.clock.pipe = pipe
        one = len(nets) == 1
        device, dtype = self.unet.device, self.unet.dtype
        images = [p.fitted(hires).control.to(device=device, dtype=dtype) for p in nets]
        img2img = "image" in run.kwargs
        kwargs = {
            **run.kwargs,
            ("control_image" if img2img else "image"): images[0] if one else images,
            "controlnet_conditioning_scale": 1.0 if one else [1.0] * len(nets),
            "control_guidance_start": 0.0 if one else [0.0] * len(nets),
            "control_guidance_end": 1.0 if one else [1.0] * len(nets),
        }
        return dataclasses.replace(run, pipe=pipe, kwargs=kwargs)

    def step_done(self, step: int) -> None:
        self.clock.loop = step + 1

    def _active(self, plan: Plan) -> bool:
        return plan.allowed(self.clock.hires, self.hires_run) and plan.in_window(self.clock.fraction())

    def _view(self, plan: Plan) -> Any:
        def scaling() -> Any:
            if not self._active(plan):
                return None
            return plan.scaling(self.clock.hires, self._region(plan))

        return unit_view(plan.net, scaling, self._uncond_rows)

    def _region(self, plan: Plan) -> Any:
        region = plan.unit.region
        if region is None:
            return None
        key = plan.unit.index
        if key not in self._regions:
            import torch

            self._regions[key] = torch.from_numpy(region)[None, None]
        return self._regions[key]

    def _uncond_rows(self, sample: Any) -> int:
        return int(sample.shape[0]) // 2 if self.cfg else 0

    def _pipeline(self, pipe: Any, nets: list[Any]) -> Any:
        """A ControlNet pipeline of `pipe`'s family and kind over the same components (scheduler included)."""
        import inspect

        import diffusers

        name = type(pipe).__name__
        xl = "XL" in name
        img2img = "Img2Img" in name
        cls = getattr(
            diffusers, f"StableDiffusion{'XL' if xl else ''}ControlNet{'Img2Img' if img2img else ''}Pipeline"
        )
        accepted = inspect.signature(cls.__init__).parameters
        components = {k: v for k, v in pipe.components.items() if k in accepted}
        built = cls(**components, controlnet=nets[0] if len(nets) == 1 else nets)
        built.set_progress_bar_config(disable=True)
        return built

    # -- inside the UNet call ------------------------------------------------------------------------------
    def latent(self, plan: Plan, batch: int) -> Any:
        """The VAE latent (a posterior sample) of the plan's map in the running pass, one row per batch row."""
        hires = self.clock.hires
        if hires not in plan.latents:
            vae = self.vae
            pixels = (plan.fitted(hires).rgb01() * 2.0 - 1.0).to(device=vae.device, dtype=vae.dtype)
            dist = vae.encode(pixels).latent_dist
            z = dist.sample(generator=self._generator)
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            plan.latents[hires] = (z - shift) * vae.config.scaling_factor
        z = plan.latents[hires]
        return z.expand(batch, *z.shape[1:]).to(device=self.unet.device, dtype=self.unet.dtype)

    def _alphas(self) -> Any:
        scheduler: Any = getattr(self.clock.pipe, "scheduler", None)
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if alphas is None:
            from diffusers import DDPMScheduler

            alphas = DDPMScheduler.from_config(scheduler.config).alphas_cumprod
        return alphas

    def _before_unet(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The reference units' write passes on their noised reference latents."""
        refs = [p for p in self.plans if p.unit.module.is_reference and self._active(p)]
        if not refs:
            return
        from diffusers.utils.torch_utils import randn_tensor

        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        rest = {k: v for k, v in kwargs.items() if k not in (*_RESIDUAL_KWARGS, "sample", "timestep")}
        batch = int(sample.shape[0])
        m = self.machine
        m.uncond_rows = self._uncond_rows(sample)
        abar = abar_at(self._alphas(), timestep, batch).to(sample.device)
        for plan in refs:
            x0 = self.latent(plan, batch)
            noise = randn_tensor(tuple(x0.shape), generator=self._generator, device=x0.device, dtype=x0.dtype)
            name = plan.unit.module.name
            if name in ("reference_only", "reference_adain+attn"):
                m.attn = "write"
            if name in ("reference_adain", "reference_adain+attn"):
                m.adain = "write"
            m.threshold = plan.unit.weight
            fidelity = plan.fidelity(self.clock.hires, self.xl)
            module.forward(q_sample(x0, abar, noise).to(sample.dtype), timestep, *args[2:], **rest)
            for hook in self._hooks():
                hook.store.finish_write(fidelity)
            m.attn = m.adain = "read"

    def _after_unet(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        """Clear what the read pass left; tile_colorfix and inpaint_only correct the predicted noise."""
        for hook in self._hooks():
            hook.store.clear()
        fixes = [p for p in self.plans if self._corrects(p)]
        if not fixes:
            return None
        import torch

        eps = output[0] if isinstance(output, tuple) else output.sample
        sample = (args[0] if args else kwargs["sample"])[:, :4]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        batch = int(sample.shape[0])
        abar = abar_at(self._alphas(), timestep, batch).to(sample.device)
        rows = self._uncond_rows(sample)
        cond = torch.ones((batch, 1, 1, 1), dtype=eps.dtype, device=eps.device)
        cond[:rows] = 0
        hires = self.clock.hires
        for plan in fixes:
            name, u = plan.unit.module.name, plan.unit
            if "colorfix" not in name:
                continue
            k = int(float(u.threshold_a))
            if hires and plan.allowed(hires, self.hires_run):
                k *= 2
            sharp = float(u.threshold_b) if "+sharp" in name else None
            eps = colorfix(sample, eps, abar, self.latent(plan, batch), k, u.weight, sharp, cond)
        for plan in fixes:
            if plan.unit.module.name == "inpaint_only":
                mask = latent_mask(plan.fitted(hires).alpha).to(device=eps.device, dtype=eps.dtype)
                eps = inpaint_restore(sample, eps, abar, self.latent(plan, batch), mask, plan.unit.weight)
        eps = eps.to(sample.dtype)
        if isinstance(output, tuple):
            return (eps, *output[1:])
        output.sample = eps
        return output

    # -- after sampling ------------------------------------------------------------------------------------
    def detected_maps(self) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(m) for p in self.plans for m in p.maps()]

    def postprocess(self, images: list[Any]) -> list[Any]:
        """inpaint_only's paste-back and recolor's brightness on the decoded images."""
        import numpy as np
        from PIL import Image

        out = list(images)
        for plan in self.plans:
            name = plan.unit.module.name
            final = plan.fitted(self.hires_run)
            if name == "inpaint_only":
                weights = paste_mask(final.array[:, :, 3])
                out = [
                    Image.fromarray(paste_back(np.asarray(im.convert("RGB")), final.array, weights))
                    for im in out
                ]
            elif name.startswith("recolor"):
                luminance = name == "recolor_luminance"
                out = [
                    Image.fromarray(recolor(np.asarray(im.convert("RGB")), final.array, luminance))
                    for im in out
                ]
        return out
