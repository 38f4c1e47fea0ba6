"""Running generations on the loaded pipeline, one at a time, with step progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knsd.serve.loader import LoadedModel
from knsd.serve.params import GenerationRequest


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


class Engine:
    """Turns validated requests into images; callers must not run two `generate` calls at once."""

    def __init__(self, model: LoadedModel, on_step: Callable[[float], None] | None = None) -> None:
        self.model = model
        self.progress = Progress()
        self._on_step = on_step
        self._schedulers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._base_config = model.txt2img.scheduler.config
        self._interrupt = threading.Event()

    def interrupt(self) -> bool:
        """Stop the running generation after its current step; False when nothing runs."""
        if self.progress.job_count == 0:
            return False
        self._interrupt.set()
        return True

    def _scheduler(self, req: GenerationRequest) -> Any:
        key = (req.sampler.scheduler_class, req.sampler.options)
        if key not in self._schedulers:
            import diffusers

            cls = getattr(diffusers, req.sampler.scheduler_class)
            self._schedulers[key] = cls.from_config(self._base_config, **dict(req.sampler.options))
        return self._schedulers[key]

    def generate(self, req: GenerationRequest, job: str = "txt2img") -> list[Any]:
        """Generate batch_size x n_iter images, seeds seed, seed+1, ... in order."""
        import torch

        pipe = self.model.img2img if req.init_image is not None else self.model.txt2img
        pipe.scheduler = self._scheduler(req)
        seeds = req.seeds
        p = self.progress
        p.job, p.job_no, p.job_count, p.started, p.interrupted = job, 0, req.n_iter, time.time(), False
        p.sampling_step, p.sampling_steps = 0, req.steps
        self._interrupt.clear()
        last = [time.perf_counter()]

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            if self._on_step is not None:
                self._on_step(now - last[0])
            last[0] = now
            p.sampling_step = step + 1
            if self._interrupt.is_set():
                p.interrupted = True
                pipeline._interrupt = True
            return tensors

        images: list[Any] = []
        try:
            for batch in range(req.n_iter):
                if p.interrupted:
                    break
                p.job_no, p.sampling_step = batch, 0
                batch_seeds = seeds[batch * req.batch_size : (batch + 1) * req.batch_size]
                # CPU generators give the same noise on every device, so a seed means the same image.
                generators = [torch.Generator(device="cpu").manual_seed(s) for s in batch_seeds]
                kwargs: dict[str, Any] = {
                    "prompt": [req.prompt] * len(batch_seeds),
                    "negative_prompt": [req.negative_prompt] * len(batch_seeds),
                    "num_inference_steps": req.steps,
                    "guidance_scale": req.cfg_scale,
                    "generator": generators,
                    "callback_on_step_end": on_step_end,
                }
                if req.init_image is not None:
                    kwargs["image"] = req.init_image
                    kwargs["strength"] = req.denoising_strength
                else:
                    kwargs["width"], kwargs["height"] = req.width, req.height
                with torch.inference_mode():
                    images.extend(pipe(**kwargs).images)
        finally:
            p.job, p.job_count, p.job_no, p.sampling_step, p.sampling_steps = "", 0, 0, 0, 0
        return images
