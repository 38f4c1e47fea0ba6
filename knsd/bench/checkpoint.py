"""Full-size checkpoints with random weights, written as original single files (A1111/Civitai layout, fp16).

The file `knsd bench --cold-start` loads when no `--model` is given: the architecture of
`v1-5-pruned-emaonly.safetensors` (1.07 B parameters, 2.13 GB), built from the shipped configs with random
weights (load times do not depend on weight values), written once into the knsd cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from knsd.bench.ldm import pipeline_to_ldm, sd3_to_ldm, sdxl_to_ldm

WRITERS = {"sd15": pipeline_to_ldm, "sdxl-base": sdxl_to_ldm, "sd35-medium": sd3_to_ldm}
FILE_NAMES = {"sd15": "v1-5-pruned-emaonly.safetensors", "sdxl-base": "sd_xl_base_1.0.safetensors",
              "sd35-medium": "sd3.5_medium.safetensors"}  # fmt: skip


def write_random_checkpoint(variant: str, path: Path, cache: Path) -> Path:
    """The architecture's full size, random weights, fp16, in the original layout; written atomically."""
    import torch
    from safetensors.torch import save_file

    from knsd.bench.random_model import random_pipeline

    pipe = random_pipeline(variant, cache, torch.float16)
    state = WRITERS[variant](pipe)
    del pipe
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return path


def bench_checkpoint(cache: Path, variant: str = "sd15") -> Path:
    """Where the benchmark's random single file of `variant` lives in the knsd cache (maybe not yet written)."""
    return cache / "bench" / f"{variant}-random" / FILE_NAMES[variant]
