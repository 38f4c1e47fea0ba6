"""The handler's runtime state: model, engine, admission and the single worker thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from starlette.requests import Request

from knsd.cache import cache_dir
from knsd.errors import Unavailable
from knsd.serve.addons.manager import AddOns
from knsd.serve.addons.setup import create_addons
from knsd.serve.api.policy import server_options
from knsd.serve.api.request import parse_txt2img
from knsd.serve.api.styles import StyleDatabase, load_styles
from knsd.serve.generate.engine import Engine
from knsd.serve.http.admission import Admission
from knsd.serve.metrics import ServeMetrics, create_metrics
from knsd.serve.models.loader import LoadedModel, load_model
from knsd.serve.settings import ServeSettings

log = logging.getLogger("knsd.serve")
T = TypeVar("T")


@dataclass
class ServerState:
    """Everything the routes share; one per app."""

    settings: ServeSettings
    metrics: ServeMetrics = field(default_factory=create_metrics)
    admission: Admission = field(init=False)
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

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_queue)
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

    def require_engine(self) -> Engine:
        """The engine, or 503 while the model loads or after it failed."""
        if self.engine is None:
            reason = "model failed to load" if self.load_error else "model is loading"
            raise Unavailable(reason, retry_after=5)
        return self.engine

    async def in_worker(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the pipeline thread; a cancelled caller still waits for it to finish."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    async def load(self, model: LoadedModel | None = None) -> None:
        """Load (unless given) and warm the model; on failure report it as fatal."""
        s = self.settings
        try:
            if model is None:
                cache = s.cache or cache_dir()
                model = await self.in_worker(
                    lambda: load_model(
                        s.model, Path(cache), s.device, s.dtype, s.model_config, s.compile, s.quantize
                    )
                )
            self.metrics.model_load.set(model.load_seconds)
            engine = Engine(model, on_step=self.metrics.step_seconds.observe)
            loaded = model
            engine.addons = await self.in_worker(lambda: create_addons(loaded, s, self.metrics))
            if s.warmup:
                warm = parse_txt2img(
                    {"prompt": "warm-up", "steps": 2, "width": 64, "height": 64, "seed": 0}, 1 << 30
                )
                seconds = await _timed(self.in_worker(lambda: engine.generate(warm, job="warm-up")))
                self.metrics.warmup.set(seconds)
                log.info("warm-up generation done in %.2fs", seconds)
            self.engine = engine
            self.ready_after = time.monotonic() - self.started
            log.info("ready after %.2fs", self.ready_after)
        except Exception as exc:  # any failure to load is fatal for a pod: report and let it restart
            self.load_error = str(exc)
            log.error("model load failed: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(str(exc))


async def _timed(awaitable: Any) -> float:
    started = time.perf_counter()
    await awaitable
    return time.perf_counter() - started


def state_of(request: Request) -> ServerState:
    """The state of the app serving `request`."""
    return cast(ServerState, request.app.state.knsd)
