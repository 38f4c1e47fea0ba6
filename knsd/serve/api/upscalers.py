"""A1111's image upscalers that need no weights (None, Lanczos, Nearest) and its latent upscale modes.

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/upscaler.py` (`Upscaler.upscale`,
`UpscalerNone/Lanczos/Nearest`) and `modules/shared.py` (`latent_upscale_modes`). Model upscalers
(ESRGAN, R-ESRGAN, SwinIR, ...) need weight files and a runtime knsd does not ship: they are never
listed, and naming one is a 422 that lists these.
"""

from __future__ import annotations

from typing import Any

from knsd.errors import InvalidField

BUILTIN_UPSCALERS = ("None", "Lanczos", "Nearest")
# A1111's latent modes for hires fix, in its order (`shared.latent_upscale_modes`): name -> (torch
# interpolate mode, antialias). `/sdapi/v1/latent-upscale-modes` lists the names; hires.py upscales with them.
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscaler_items() -> list[dict[str, Any]]:
    """`/sdapi/v1/upscalers`: the built-ins have no model and scale 4, as in A1111."""
    return [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
        for name in BUILTIN_UPSCALERS
    ]


def require_upscaler(field: str, name: Any) -> str:
    """The upscaler name, or a 422 naming the field and the supported upscalers."""
    if not isinstance(name, str) or name not in BUILTIN_UPSCALERS:
        raise InvalidField(field, f"one of {', '.join(BUILTIN_UPSCALERS)}", name)
    return name
