"""Running A1111's scripts on the engine: each script is a series of ordinary generations whose images it
combines (A1111's `scripts/*.py` run `process_images` the same way)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from knsd.serve.api.grids import combine, split, tile_grid
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.scripts import SdUpscale
from knsd.serve.generate.upscale import upscale

if TYPE_CHECKING:
    from knsd.serve.generate.engine import Engine


@dataclass
class ScriptResult:
    """A script's images, the request whose infotext describes them and the infotext keys it adds."""

    images: list[Any]
    first: GenerationRequest
    extra: dict[str, Any] = field(default_factory=dict)


def upscaled_size(source: Any, spec: SdUpscale) -> tuple[int, int]:
    """The size sd upscale works at: A1111's Upscaler.upscale (a multiple of 8), or the source for None."""
    if spec.upscaler == "None":
        return source.width, source.height
    return int(source.width * spec.scale // 8 * 8), int(source.height * spec.scale // 8 * 8)


def sd_upscale(
    engine: Engine,
    req: GenerationRequest,
    source: Any,
    spec: SdUpscale,
    job: str,
    stop: threading.Event | None = None,
) -> ScriptResult:
    """A1111's `sd upscale`: upscale the init image, img2img it in tiles of width x height overlapping by
    `overlap` (tile k of batch i gets seed + i + k, as A1111's batches do), blend the tiles back; once per
    `n_iter`, from seed + n."""
    image = source if spec.upscaler == "None" else upscale(source, spec.upscaler, spec.scale)
    grid = tile_grid(image.width, image.height, req.width, req.height, spec.overlap)
    tiles = split(image, grid)
    extra = {"SD upscale overlap": spec.overlap, "SD upscale upscaler": spec.upscaler}
    size = req.batch_size
    first: GenerationRequest | None = None
    results = []
    for n in range(req.n_iter):
        done: list[Any] = []
        for i in range(math.ceil(len(tiles) / size)):
            for k, tile in enumerate(tiles[i * size : (i + 1) * size]):
                part = replace(
                    req,
                    init_image=tile,
                    seed=req.seed + n + i + k,
                    subseed=req.subseed + k,
                    batch_size=1,
                    n_iter=1,
                )
                first = first or part
                if not engine.progress.interrupted:
                    done.extend(engine.generate(part, job, stop).images)
        from PIL import Image

        done += [Image.new("RGB", (req.width, req.height))] * (len(tiles) - len(done))  # interrupted: black
        results.append(combine(done, grid))
    assert first is not None
    return ScriptResult(results, first, extra)
