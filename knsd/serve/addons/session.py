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

from knsd.serve.addons.controlnet import detect, mode_hook
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
        width: int,
        height: int,
        cfg: bool,
        init_image: Any = None,
        prompts: tuple[str, ...] = (),
    ) -> None:
        self.addons = addons
        self.prompts = prompts
        self.request = request
        self.width, self.height, self.cfg = width, height, cfg
        self.init_image = init_image
        self._pending: list[tuple[LoraTag, Future[ParsedLora]]] = []
        self._hooks: list[Any] = []
        self._nets: list[Any] = []
        self._maps: list[Any] = []
        self._built: dict[int, Any] = {}
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
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
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
        a = self.addons
        unet = a.components["unet"]
        for unit in self.request.units:
            field = f"alwayson_scripts.controlnet.args[{unit.index}]"
            model = a.controlnets.resolve(unit.model, field + ".model")
            started = time.perf_counter()
            net = a.controlnets.load(model, unet)
            a._observe("addon_load_seconds", time.perf_counter() - started, "controlnet")
            image = unit.image if unit.image is not None else self.init_image
            if image is None:
                from knsd.errors import InvalidField

                raise InvalidField(field + ".image", "a base64 image (txt2img units need one)", None)
            self._maps.append(detect(unit, image, self.width, self.height))
            self._nets.append(net)
            hook = mode_hook(unit.control_mode, self.cfg)
            if hook is not None:
                self._hooks.append(net.register_forward_hook(hook, with_kwargs=True))
            self.extra_generation_params[f"ControlNet {unit.index}"] = unit.infotext(model.title)

    # -- what the engine asks ----------------------------------------------------------------------------
    def pipeline(self, pipe: Any) -> Any:
        """`pipe`, or a ControlNet pipeline of the same family built from its components."""
        if not self._nets:
            return pipe
        import diffusers

        name = type(pipe).__name__
        xl = "XL" in name
        img2img = "Img2Img" in name
        cls_name = f"StableDiffusion{'XL' if xl else ''}ControlNet{'Img2Img' if img2img else ''}Pipeline"
        cls = getattr(diffusers, cls_name)
        nets = self._nets[0] if len(self._nets) == 1 else list(self._nets)
        components = {k: v for k, v in pipe.components.items() if k in _init_args(cls)}
        built = cls(**components, controlnet=nets)
        built.set_progress_bar_config(disable=True)
        return built

    def call_kwargs(self, img2img: bool = False) -> dict[str, Any]:
        """Control images and per-unit scales / guidance windows for the ControlNet pipeline call."""
        if not self._nets:
            return {}
        units = self.request.units
        one = len(units) == 1

        def pick(values: list[Any]) -> Any:
            return values[0] if one else values

        return {
            ("control_image" if img2img else "image"): pick(self._maps),
            "controlnet_conditioning_scale": pick([u.weight for u in units]),
            "control_guidance_start": pick([u.guidance_start for u in units]),
            "control_guidance_end": pick([u.guidance_end for u in units]),
        }

    def apply_to_pass(self, run: Any) -> Any:
        """The engine's sampling pass (`pipe`, `kwargs`) with the ControlNet units attached.

        Units apply to the first pass only (a hires pass gets latents as `image`): A1111's "Low res only".
        """
        image = run.kwargs.get("image")
        if not self._nets or (image is not None and hasattr(image, "shape")):
            return run
        key = id(run.pipe)
        if key not in self._built:
            self._built[key] = self.pipeline(run.pipe)
        kwargs = {**run.kwargs, **self.call_kwargs(img2img="image" in run.kwargs)}
        return dataclasses.replace(run, pipe=self._built[key], kwargs=kwargs)

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
        """The units' control images, for the response (units with `save_detected_map: false` left out)."""
        return [m for m, u in zip(self._maps, self.request.units, strict=True) if u.save_detected_map]

    def on_step_end(self, step: int) -> None:
        """Patch in overlapped LoRAs that are ready; before step K, wait for the rest."""
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


def _init_args(cls: Any) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(cls.__init__).parameters)
