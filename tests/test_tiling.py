"""A1111's `tiling`: circular padding makes the UNet and the VAE treat the latents as a torus, so images wrap
around at their edges; the model is exactly as before afterwards."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from knsd.serve.api.infotext import ModelInfo, infotext
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from knsd.serve.generate.tiling import seamless

BASE = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 4}
BUDGET = 1 << 30


@pytest.fixture(scope="module")
def engine(tiny_model: Any) -> Engine:
    return Engine(tiny_model)


def _wrap_ratio(image: Any) -> float:
    """The step across the wrap-around seams over the mean step between neighbouring pixels inside."""
    a = np.asarray(image, dtype=np.float64)
    wrap = (np.abs(a[:, 0] - a[:, -1]).mean() + np.abs(a[0] - a[-1]).mean()) / 2
    inside = (np.abs(np.diff(a, axis=1)).mean() + np.abs(np.diff(a, axis=0)).mean()) / 2
    return float(wrap / inside)


def test_tiled_images_are_continuous_across_their_opposite_edges(engine: Engine) -> None:
    ratios = {}
    for tiling in (False, True):
        images = [
            engine.generate(parse_txt2img({**BASE, "seed": seed, "tiling": tiling}, BUDGET)).images[0]
            for seed in (1, 2, 3)
        ]
        ratios[tiling] = float(np.mean([_wrap_ratio(im) for im in images]))
    assert ratios[True] < 1.25  # the seam is like any other neighbour pair
    assert ratios[False] > ratios[True] + 0.2  # zero padding leaves an edge


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_vae_and_unet_are_shift_equivariant_on_the_torus_and_restored_after(engine: Engine) -> None:
    pipe = engine.model.txt2img
    vae, unet = pipe.vae, pipe.unet
    before = (_state(vae), _state(unet))
    modes = [m.padding_mode for m in unet.modules() if type(m) is torch.nn.Conv2d]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def decode(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = vae.decode(x, return_dict=False)[0]
        return out

    # the UNet downsamples by 2 per level: shifts by that many latent cells commute with it on a torus
    step = 2 ** (len(unet.config.block_out_channels) - 1)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))

    def denoise(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = unet(x, 500, encoder_hidden_states=text, return_dict=False)[0]
        return out

    with torch.inference_mode():
        plain_gap = (decode(latents.roll(1, 3)) - decode(latents).roll(8, 3)).abs().max()
        with seamless(engine.model, True):
            assert all(m.padding_mode == "circular" for m in vae.modules() if type(m) is torch.nn.Conv2d)
            gap = (decode(latents.roll(1, 3)) - decode(latents).roll(8, 3)).abs().max()
            unet_gap = (denoise(latents.roll(step, 2)) - denoise(latents).roll(step, 2)).abs().max()
    assert gap < 1e-4 and unet_gap < 1e-4
    assert plain_gap > 100 * gap
    # nothing but the padding mode changed, and it is back
    assert [m.padding_mode for m in unet.modules() if type(m) is torch.nn.Conv2d] == modes
    for saved, module in zip(before, (vae, unet), strict=True):
        now = module.state_dict()
        assert all(torch.equal(saved[k], now[k]) for k in saved)


def test_padding_comes_back_when_the_request_fails(engine: Engine) -> None:
    vae = engine.model.txt2img.vae
    with pytest.raises(RuntimeError), seamless(engine.model, True):
        raise RuntimeError("interrupted")
    assert {m.padding_mode for m in vae.modules() if type(m) is torch.nn.Conv2d} == {"zeros"}


def test_tiling_infotext_and_option() -> None:
    req = parse_txt2img({**BASE, "seed": 1, "tiling": True}, BUDGET)
    line = infotext(req, 1, ModelInfo("t", "h")).splitlines()[-1]
    assert "Tiling: True" in line and line.index("RNG") < line.index("Tiling")
    # null takes the `tiling` option, as in A1111
    assert parse_txt2img({**BASE, "override_settings": {"tiling": True}}, BUDGET).tiling is True
    assert (
        parse_txt2img({**BASE, "tiling": False, "override_settings": {"tiling": True}}, BUDGET).tiling
        is False
    )
