"""The embedded tiny models, by `--model` name: real diffusers pipelines with tiny widths and random weights.

Each is built deterministically from a fixed seed without touching the network, saved as a diffusers folder
in the knsd cache and then loaded from there like any real checkpoint (`sd1`, `sdxl`, `sd3` build them from
the shared `parts`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from knsd.cache import build_once
from knsd.serve.models.tiny import sd1, sd3, sdxl

TINY_NAMES = ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-inpaint")
# `--model` name -> (cache folder name, builder); a builder's VERSION changes when its build does.
BUILDERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "tiny": (sd1.VERSION, sd1.build),
    "tiny-sdxl": (sdxl.VERSION, sdxl.build),
    "tiny-sd3": (sd3.VERSION, sd3.build),
    "tiny-inpaint": (sd1.INPAINT_VERSION, sd1.build_inpaint),
}


def tiny_model_dir(cache: Path, name: str = "tiny") -> Path:
    """The folder a tiny model lives in under the knsd cache."""
    return cache / "models" / BUILDERS[name][0]


def ensure_tiny_model(cache: Path, name: str = "tiny") -> Path:
    """Build a tiny model into the cache unless it is already there; return its folder."""
    version, builder = BUILDERS[name]
    return build_once(cache / "models" / version, builder, cache)
