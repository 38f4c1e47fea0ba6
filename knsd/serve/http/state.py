"""The handler's runtime state: model, engine, admission and the single worker thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from starlette.requests import Request

from knsd.errors import InvalidField, Unavailable
from knsd.serve.addons.manager import AddOns
from knsd.serve.addons.setup import create_addons
from knsd.serve.api.images import ImageLimits
from knsd.serve.api.limits import PromptLimits, check_prompts
from knsd.serve.api.policy import server_options
from knsd.serve.api.request import GenerationRequest, parse_txt2img
from knsd.serve.api.styles import StyleDatabase, load_styles
from knsd.serve.generate.engine import Engine
from knsd.serve.http.admission import Admission
from knsd.serve.http.offload import Offload
from knsd.serve.http.startup import start_loading
from knsd.serve.metrics import ServeMetrics, create_metrics
from knsd.serve.models.loader import LoadedModel
from knsd.serve.settings import ServeSettings
from knsd.serve.timeline import Timeline

log = logging.getLogger("knsd.serve")
T = TypeVar("T")


@dataclass
class ServerState:
    """Everything the routes share; one per app."""

    settings: ServeSettings
    metrics: ServeMetrics = field(default_factory=create_metrics)
    admission: Admission = field(init=False)
    offload: Offload = field(init=False)  # parsing and decoding, off the event loop
    # One worker thread: the pipeline runs there so probes and metrics stay responsive.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "knsd-pipeline"))
    engine: Engine | None = None
    load_error: str | None = None
    started: float = field(default_factory=time.monotonic)
    ready_after: float | None = None
    on_fatal: Callable[[str], None] | None = None
    # A1111's options object, as set by POST /sdapi/v1/options (api.options, api.policy).
    generation_options: dict[str, Any] = field(default_factory=server_options)
    styles: StyleDatabase = field(init=False)
    # The model load `knsd serve` started before the app existed (on `executor`), and its phases.
    preload: Future[LoadedModel] | None = None
    timeline: Timeline = field(default_factory=Timeline)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_queue)
        s = self.settings
        self.offload = Offload(ImageLimits(s.max_image_pixels, s.max_request_pixels, s.max_images))
        self.styles = load_styles(self.settings.styles_files)
        m = self.metrics
        m.queue_depth.set_function(lambda: self.admission.waiting)
        m.inflight.set_function(lambda: self.admission.running)
        m.peak.set_function(lambda: self.admission.peak)
        m.ready.set_function(lambda: 1.0 if self.readiness() == "ready" else 0.0)

    def readiness(self) -> str:
        """ "ready", or why not: "loading", "draining" or "failed"."""
        if self.load_error is not None:
            return "failed"
        if self.admission.draining:
            return "draining"
        if self.engine is None:
            return "loading"
        return "ready"

    @property
    def addons(self) -> AddOns | None:
        """The loaded model's add-ons (LoRA, ControlNet, embeddings), None while it loads."""
        return self.engine.addons if self.engine is not None else None

    def require_addons(self) -> AddOns:
        """The add-ons, or 503 while the model loads."""
        addons = self.addons
        if addons is None:
            raise Unavailable("model is loading", retry_after=5)
        return addons

    @property
    def prompt_limits(self) -> PromptLimits:
        return PromptLimits(self.settings.max_prompt_chars, self.settings.max_extra_networks)

    def check_limits(self, req: GenerationRequest) -> None:
        """The request within the server's prompt limits (422 naming the field and the flag)."""
        check_prompts(req, self.prompt_limits)

    def check_checkpoint(self, wanted: Any, field: str) -> None:
        """A model name a request gives must be the loaded model's (one model per pod): 422 otherwise."""
        if wanted is None:
            return
        model = self.require_engine().model
        if wanted not in (model.title, model.info.name):
            raise InvalidField(field, f"the loaded model {model.title!r} (one model per pod)", wanted)

    def require_engine(self) -> Engine:
        """The engine, or 503 while the model loads or after it failed."""
        if self.engine is None:
            reason = "model failed to load" if self.load_error else "model is loading"
            raise Unavailable(reason, retry_after=5)
        return self.engine

    async def in_worker(self, fn: Callable[[], T], on_cancel: Callable[[], None] | None = None) -> T:
        """Run `fn` on the pipeline thread; a cancelled caller calls `on_cancel` (to make `fn` stop early)
        and still waits for it to finish, so the pipeline is free when the caller's slot is released."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if on_cancel is not None:
                on_cancel()
            await asyncio.wait([future])
            raise

    async def load(self, model: LoadedModel | None = None) -> None:
        """Load (unless given or started already) and warm the model; on failure report it as fatal."""
        s = self.settings
        try:
            if model is None and self.preload is not None:
                model = await asyncio.wrap_future(self.preload)
            if model is None:
                model = await self.in_worker(lambda: start_loading(s, self.timeline))
            self.metrics.model_load.set(model.load_seconds)
            engine = Engine(model, on_step=self.metrics.step_seconds.observe)
            loaded = model
            engine.addons = await self.in_worker(lambda: create_addons(loaded, s, self.metrics))
            if s.warmup:
                warm = warmup_request(loaded, s.compile)
                with self.timeline.phase("warm-up"):
                    seconds = await _timed(self.in_worker(lambda: warm_up(engine, warm)))
                self.metrics.warmup.set(seconds)
                log.info("warm-up generation (%dx%d, %d step) done in %.2fs", warm.width, warm.height,
                         warm.steps, seconds)  # fmt: skip
            self.engine = engine
            self.ready_after = time.monotonic() - self.started
            self.timeline.mark("ready")
            self.metrics.record_startup(self.timeline)
            log.info("ready %.2fs after the process started", self.timeline.now())
            if loaded.after_ready is not None:  # the hash and the converted weights, off the start-up path
                patcher = getattr(engine.addons, "patcher", None)
                if patcher is not None:
                    loaded.after_ready.patch_state = patcher.state
                loaded.after_ready.start()
        except Exception as exc:  # any failure to load is fatal for a pod: report and let it restart
            self.load_error = str(exc)
            log.error("model load failed: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(str(exc))


def warmup_request(model: LoadedModel, compiled: bool) -> GenerationRequest:
    """The warm-up: every served module once at the smallest size (64x64, 1 step, no CFG batch); with
    --compile, the shape requests will have (the family's default size, CFG), so it is compiled before
    the first request, and enough steps for CUDA graphs to be recorded and replayed."""
    if compiled:
        side = model.family.default_size
        body = {"prompt": "warm-up", "steps": 3, "width": side, "height": side, "seed": 0}
    else:
        body = {"prompt": "warm-up", "steps": 1, "width": 64, "height": 64, "seed": 0, "cfg_scale": 1.0}
    return parse_txt2img(body, 1 << 30)


def warm_up(engine: Engine, request: GenerationRequest) -> None:
    """Run the warm-up generation; on CPU on one thread: at its size a second thread saves little, while on
    a CPU shared with other processes (or a pod whose CPU quota is below the node's core count) an OpenMP
    team of two spins against them and was measured 3x slower (2.4 s against 7.0 s, SD 1.5, 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    if engine.model.device == "cpu":
        torch.set_num_threads(1)
    try:
        engine.generate(request, job="warm-up")
    finally:
        torch.set_num_threads(threads)


async def _timed(awaitable: Any) -> float:
    started = time.perf_counter()
    await awaitable
    return time.perf_counter() - started


def state_of(request: Request) -> ServerState:
    """The state of the app serving `request`."""
    return cast(ServerState, request.app.state.knsd)
