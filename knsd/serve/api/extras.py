"""A1111's "extras" request (`extra-single-image`, `extra-batch-images`), validated (pure).

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/postprocessing.py` (`run_postprocessing`),
`scripts/postprocessing_upscale.py` (`ScriptPostprocessingUpscale`) and `modules/api/models.py`
(`ExtrasBaseRequest`). Face restoration (GFPGAN, CodeFormer) needs weights knsd does not ship: a
visibility above 0 is a 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import flag, integer, number
from knsd.serve.api.upscalers import require_upscaler


@dataclass(frozen=True, slots=True)
class ExtrasRequest:
    """ExtrasBaseRequest, validated."""

    resize_mode: int
    upscaling_resize: float | int
    upscaling_resize_w: int
    upscaling_resize_h: int
    upscaling_crop: bool
    upscaler_1: str
    upscaler_2: str
    upscaler_2_visibility: float


def parse_extras(body: dict[str, Any]) -> ExtrasRequest:
    """Validate ExtrasBaseRequest's fields (A1111's defaults)."""
    for key in ("gfpgan_visibility", "codeformer_visibility"):
        if number(body, key, 0, 0, 1) > 0:
            raise InvalidField(
                key, "0 (no face restorer is installed, see /sdapi/v1/face-restorers)", body[key]
            )
    number(body, "codeformer_weight", 0, 0, 1)
    flag(body, "show_extras_results", True)
    flag(body, "upscale_first", False)
    resize = number(body, "upscaling_resize", 2, 0, 16, open_lo=True)
    # pydantic turns a given number into a float (2 -> 2.0) but leaves the int default: so does knsd,
    # because the value is written into the infotext ("Postprocess upscale by: 2.0").
    return ExtrasRequest(
        resize_mode=integer(body, "resize_mode", 0, 0, 1),
        upscaling_resize=resize,
        upscaling_resize_w=integer(body, "upscaling_resize_w", 512, 1, 8192),
        upscaling_resize_h=integer(body, "upscaling_resize_h", 512, 1, 8192),
        upscaling_crop=flag(body, "upscaling_crop", True),
        upscaler_1=require_upscaler("upscaler_1", body.get("upscaler_1") or "None"),
        upscaler_2=require_upscaler("upscaler_2", body.get("upscaler_2") or "None"),
        upscaler_2_visibility=number(body, "extras_upscaler_2_visibility", 0, 0, 1),
    )
