"""A1111's `tiling` (seamless textures): every plain Conv2d of the denoiser and the VAE pads circularly for
one request, so the image wraps around at its edges; restored after the request (A1111's apply_circular,
`modules/sd_hijack.py`). Only the padding mode changes: no weight is touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _convs(model: Any) -> list[Any]:
    import torch

    pipe = model.txt2img
    parts = [getattr(pipe, name, None) for name in ("unet", "transformer", "vae")]
    # exactly Conv2d, as A1111: subclasses (e.g. LoRA-compatible convs of other libraries) keep their padding
    return [m for part in parts if part is not None for m in part.modules() if type(m) is torch.nn.Conv2d]


def is_compiled(model: Any) -> bool:
    """True when the denoiser was compiled (--compile): its graph was traced with zero padding."""
    pipe = model.txt2img
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return hasattr(denoiser, "_orig_mod")


@contextmanager
def seamless(model: Any, enabled: bool) -> Iterator[None]:
    """Circular padding for the duration of the block when `enabled`; each conv's own mode afterwards."""
    if not enabled:
        yield
        return
    saved = [(conv, conv.padding_mode) for conv in _convs(model)]
    try:
        for conv, _ in saved:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in saved:
            conv.padding_mode = mode
