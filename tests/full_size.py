"""Full-size checkpoints with random weights, written as original single files (for slow tests and benches)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tests.ldm_checkpoint import pipeline_to_ldm, sd3_to_ldm, sdxl_to_ldm

WRITERS = {"sd15": pipeline_to_ldm, "sdxl-base": sdxl_to_ldm, "sd35-medium": sd3_to_ldm}


def write_random_checkpoint(variant: str, path: Path, cache: Path) -> Path:
    """The architecture's full size, random weights, fp16, in the A1111/Civitai layout (like v1-5-pruned-emaonly)."""
    import torch

    from knsd.bench.random_model import random_pipeline

    pipe = random_pipeline(variant, cache, torch.float16)
    state = WRITERS[variant](pipe)
    del pipe
    save_file(state, str(path))
    return path
