"""Live previews drawn on the pipeline thread at a step: the denoised estimate as a base64 PNG.

Methods as A1111's `show_progress_type` (knsd.serve.api.preview): "Approx cheap" (a linear map, at latent
size), "Full" (the model's VAE), "Approx NN" and "TAESD" (small networks whose weights must be on the model
volume, knsd.serve.generate.approx). Several images of a batch become A1111's grid (rows = round(sqrt(n))).
"""

from __future__ import annotations

import base64
import io
import logging
import math
from pathlib import Path
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.preview import WEIGHTED_METHODS, PreviewPlan
from knsd.serve.generate.approx import cheap_rgb, load_network, network_rgb, weights_path

log = logging.getLogger("knsd.serve")


def grid(images: list[Any]) -> Any:
    """A1111's image grid with its default rows (round(sqrt(n))), filled row by row on black."""
    from PIL import Image

    rows = min(max(round(math.sqrt(len(images))), 1), len(images))
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    out = Image.new("RGB", (cols * w, rows * h), "black")
    for i, image in enumerate(images):
        out.paste(image, (i % cols * w, i // cols * h))
    return out


def to_images(rgb: Any) -> list[Any]:
    """(N, 3, H, W) in [-1, 1] -> PIL images, as A1111's single_sample_to_image."""
    from PIL import Image

    pixels = ((rgb.float() * 0.5 + 0.5).clamp(0, 1) * 255).to("cpu").permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p.astype("uint8")) for p in pixels]


def png_base64(image: Any) -> str:
    """A preview as A1111's API sends it: a base64 PNG without metadata."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Previewer:
    """Draws previews for one loaded model; the networks are loaded once, on first use."""

    def __init__(self, family: str, latent_channels: int, volume: Path, decode: Any) -> None:
        self.family = family
        self.latent_channels = latent_channels
        self.volume = volume
        self.decode = decode  # latents -> PIL images through the model's VAE (Passes.decode)
        self._networks: dict[str, Any] = {}

    def check(self, plan: PreviewPlan) -> None:
        """A method whose weights are not on the volume is a 422 naming the setting and the file."""
        if plan.method in WEIGHTED_METHODS:
            path = weights_path(self.volume, plan.method, self.family)
            if not path.is_file():
                raise InvalidField(
                    plan.field,
                    "Full or Approx cheap, or a method whose weights are on the model volume",
                    plan.method,
                    f"{plan.field} {plan.method!r} needs its weights at {path.relative_to(self.volume)} on the "
                    "model volume (knsd downloads nothing); use 'Approx cheap' or 'Full'",
                )

    def render(self, latents: Any, plan: PreviewPlan) -> str:
        """The preview of denoised `latents` (N, C, h, w): a grid of all, or the first image, as base64 PNG."""
        if not plan.grid:
            latents = latents[:1]
        if plan.method == "Full":
            images = self.decode(latents)
        elif plan.method == "Approx cheap":
            images = to_images(cheap_rgb(latents, self.family))
        else:
            images = to_images(network_rgb(self._network(plan.method, latents), plan.method, latents))
        return png_base64(grid(images) if len(images) > 1 else images[0])

    def _network(self, method: str, like: Any) -> Any:
        if method not in self._networks:
            path = weights_path(self.volume, method, self.family)
            self._networks[method] = load_network(method, path, self.latent_channels, like.device, like.dtype)
            log.info("live previews: %s loaded from %s", method, path)
        return self._networks[method]
