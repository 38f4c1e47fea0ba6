"""The start of `knsd serve`, before the web app exists: the head start on the model.

`begin` runs first in the process (the CLI calls it before importing the server): it drops third-party
integrations and warnings the served model does not need, starts reading the checkpoint on a thread
(`models.prefetch`) and imports torch on the main thread. The web server stack is imported next, then
`start` loads the model on the pipeline thread while the server starts listening.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from knsd.cache import cache_dir
from knsd.serve.models.loader import LoadedModel, load_model
from knsd.serve.models.prefetch import Prefetch
from knsd.serve.settings import ServeSettings
from knsd.serve.thirdparty import quiet_third_party, skip_unused
from knsd.serve.timeline import Timeline


@dataclass(frozen=True, slots=True)
class StartupLoad:
    """A model load started before the app exists: on the pipeline thread, with its phases."""

    executor: ThreadPoolExecutor
    future: Future[LoadedModel]
    timeline: Timeline


def _prefetch(settings: ServeSettings, timeline: Timeline) -> Prefetch:
    s = settings
    cache = Path(s.cache or cache_dir())
    return Prefetch(s.model, cache, s.device, s.dtype, s.model_config, s.converted_max_bytes > 0, timeline)


def start_loading(
    settings: ServeSettings, timeline: Timeline, prefetch: Prefetch | None = None
) -> LoadedModel:
    """`load_model` with the server's settings (runs on the pipeline thread)."""
    s = settings
    cache = Path(s.cache or cache_dir())
    prefetch = prefetch or _prefetch(settings, timeline)
    return load_model(
        s.model, cache, s.device, s.dtype, s.model_config, s.compile, s.quantize,
        prefetch=prefetch, converted_max_bytes=s.converted_max_bytes,
    )  # fmt: skip


def compile_cache(settings: ServeSettings) -> None:
    """With --compile: keep torch.compile's caches (Inductor's FX graphs, AOTAutograd) in the knsd cache, so
    a later pod with the same cache volume reuses the compiled kernels (set before torch is imported)."""
    if settings.compile:
        cache = Path(settings.cache or cache_dir())
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def begin(settings: ServeSettings, timeline: Timeline | None = None) -> Prefetch:
    """Drop unused integrations, start reading the model on a thread and import torch; returns the reader.

    The caller then imports the web server stack and calls `start`: imports hold the GIL, so the model's
    imports (on the pipeline thread) and the server's (on this one) run one after the other rather than
    handing the GIL back and forth (which costs most on a busy machine); reading the file needs no GIL and
    runs beside both."""
    timeline = timeline or Timeline()
    quiet_third_party()
    skip_unused(settings.quantize)
    compile_cache(settings)
    prefetch = _prefetch(settings, timeline).start()
    # torch imported first from the pipeline thread makes every generation ~20 % slower here (its thread
    # pools start from that thread): import it on the main thread, then load on the pipeline thread.
    with timeline.phase("imports"):
        import torch  # noqa: F401
    return prefetch


def start(settings: ServeSettings, prefetch: Prefetch) -> StartupLoad:
    """Start loading the model on a fresh pipeline thread (the app takes it over: `create_app(startup=...)`)."""
    executor = ThreadPoolExecutor(1, "knsd-pipeline")
    future = executor.submit(start_loading, settings, prefetch.timeline, prefetch)
    return StartupLoad(executor, future, prefetch.timeline)
