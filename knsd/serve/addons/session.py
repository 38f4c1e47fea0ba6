"""One request's add-ons: LoRA patching (with SwiftDiffusion's overlapped loading) and ControlNet units.

Entered by the engine around the whole generation. With `--lora-overlap-steps K > 0` a LoRA that is not in
the RAM cache loads on a background thread while denoising starts without it; `on_step_end` patches it in
at the first step boundary after it is ready, and waits for it before step K (so it is at most K steps late).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future
from typing import Any

from knsd.serve.addons.controlnet.build import Control, build_control
from knsd.serve.addons.controlnet.img2img import Img2ImgInput
from knsd.serve.addons.controlnet.plan import Geometry
from knsd.serve.addons.lora import ParsedLora
from knsd.serve.addons.manager import AddOns
from knsd.serve.addons.patch import LoraUse
from knsd.serve.addons.request import AddonRequest, LoraTag

log = logging.getLogger("knsd.serve")


def _alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")


class AddonSession:
    """Context manager: patches on enter, restores bit-exactly on exit, whatever happens in between."""

    def __init__(
        self,
        addons: AddOns,
        request: AddonRequest,
        geometry: Geometry,
        cfg: bool,
        img2img: Img2ImgInput | None = None,
        prompts: tuple[str, ...] = (),
        seed: int = 0,
    ) -> None:
        self.addons = addons
        self.prompts = prompts
        self.request = request
        self.geometry, self.cfg, self.seed = geometry, cfg, seed
        self.img2img = img2img
        self.control: Control | None = None
        self._pending: list[tuple[LoraTag, Future[ParsedLora]]] = []
        self.late_steps: list[int] = []  # the step each overlapped LoRA was patched in at
        self.extra_generation_params: dict[str, str] = {}

    # -- enter / exit ------------------------------------------------------------------------------------
    def __enter__(self) -> AddonSession:
        emb = self.addons.embeddings
        if emb.changed():
            emb.refresh()
        emb.install()
        try:
            self._enter_loras()
            self._enter_units()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.control is not None:
            self.control.session.exit()
        for _, future in self._pending:
            future.cancel()  # a running load finishes into the cache; nothing is patched any more
        self._pending.clear()
        self.addons.last_late_steps = list(self.late_steps)
        started = time.perf_counter()
        self.addons.patcher.restore()
        if self.request.loras:
            self.addons._observe("lora_patch_seconds", time.perf_counter() - started, "restore")

    def _enter_loras(self) -> None:
        a = self.addons
        ready: list[LoraUse] = []
        hashes: list[str] = []
        for tag in self.request.loras:
            item = a.find_lora(tag.name)
            hashes.append(f"{_alias(tag.name)}: {a.lora_hash(item)}")
            if a.settings.overlap_steps > 0 and not a.is_cached(item):
                self._pending.append((tag, a.load_in_background(item)))
                continue
            ready.append(LoraUse(tag.name, a.load_lora(item), tag.te, tag.unet, tag.dyn))
        if hashes:
            self.extra_generation_params["Lora hashes"] = ", ".join(hashes)
        self._patch(ready)
        used = a.embeddings.used(list(self.prompts))
        if used:
            self.extra_generation_params["TI hashes"] = ", ".join(
                f"{_alias(n)}: {a.embeddings.shorthash(n)}" for n in used
            )

    def _patch(self, uses: list[LoraUse]) -> None:
        if not uses:
            return
        started = time.perf_counter()
        self.addons.patcher.apply(uses)
        self.addons._observe("lora_patch_seconds", time.perf_counter() - started, "patch")

    def _enter_units(self) -> None:
        if not self.request.units:
            return
        self.control = build_control(
            self.addons, self.request, self.geometry, self.cfg, self.img2img, self.seed
        )
        self.extra_generation_params.update(self.control.infotext)
        self.control.session.enter()

    # -- what the engine asks ----------------------------------------------------------------------------
    def apply_to_pass(self, run: Any) -> Any:
        """The engine's sampling pass (`pipe`, `kwargs`) with the ControlNet units that act in it."""
        return self.control.session.apply(run) if self.control is not None else run

    def postprocess(self, images: list[Any]) -> list[Any]:
        """The decoded images after the units' pixel post-processing (inpaint_only, recolor)."""
        return self.control.session.postprocess(images) if self.control is not None else images

    def prepare_request(self, req: Any, expand: bool) -> Any:
        """The request with multi-vector embedding names expanded in what knsd encodes itself."""
        if not expand:
            return req
        cond, neg = self.expand_prompt(req.cond_prompt), self.expand_prompt(req.cond_negative)
        if (cond, neg) == (req.cond_prompt, req.cond_negative):
            return req
        return dataclasses.replace(req, cond_prompt=cond, cond_negative=neg)

    @property
    def detected_maps(self) -> list[Any]:
        """The units' detected maps, for the response (two per unit in a hires run, the hires one first;
        units with `save_detected_map: false` left out)."""
        return self.control.session.detected_maps() if self.control is not None else []

    def on_step_end(self, step: int) -> None:
        """Count the step for the ControlNet units; patch in overlapped LoRAs that are ready; before step
        K, wait for the rest."""
        if self.control is not None:
            self.control.session.step_done(step)
        if not self._pending:
            return
        must_wait = step + 1 >= self.addons.settings.overlap_steps
        still: list[tuple[LoraTag, Future[ParsedLora]]] = []
        ready: list[LoraUse] = []
        for tag, future in self._pending:
            if future.done() or must_wait:
                parsed = future.result()
                ready.append(LoraUse(tag.name, parsed, tag.te, tag.unet, tag.dyn))
                self.late_steps.append(step + 1)
            else:
                still.append((tag, future))
        self._pending = still
        self._patch(ready)

    def expand_prompt(self, text: str) -> str:
        """Multi-vector embedding names expanded for conditioning code that tokenizes itself."""
        return self.addons.embeddings.expand(text)
