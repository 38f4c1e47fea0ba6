"""A1111 inpainting over real HTTP on the tiny model: what the mask keeps, what it regenerates, and how.

The tiny model's weights are random, so "changed" means "not the original pixels"; what is kept is checked
exactly (the overlay lays the original back bit for bit where the mask is black beyond the blur's reach).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.api.mask import kernel_width
from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

BASE = {"prompt": "a red door", "width": 64, "height": 64, "steps": 4, "seed": 11, "denoising_strength": 0.75,
        "inpaint_full_res": False, "mask_blur": 0, "sampler_name": "Euler a"}  # fmt: skip


@pytest.fixture(scope="module")
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def picture(width: int = 64, height: int = 64) -> np.ndarray:
    """A smooth, structured test picture (gradients and a diagonal)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, ((x + y) * 3) % 256], -1).astype(np.uint8)


def b64(pixels: np.ndarray | Image.Image) -> str:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def square_mask(
    width: int = 64, height: int = 64, box: tuple[int, int, int, int] = (20, 20, 44, 44)
) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    return mask


def inpaint(
    url: str, pixels: np.ndarray, mask: np.ndarray | Image.Image, **fields: Any
) -> tuple[np.ndarray, dict]:
    body = {**BASE, "init_images": [b64(pixels)], "mask": b64(mask), **fields}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    return np.asarray(image.convert("RGB")).astype(int), json.loads(r.json()["info"])


def change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(-1)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "UniPC"])
def test_outside_the_mask_is_the_original_inside_is_new(url: str, sampler: str) -> None:
    original, mask = picture(), square_mask()
    out, info = inpaint(url, original, mask, sampler_name=sampler)
    diff = change(out, original)
    assert (diff[mask == 0] == 0).all()  # the overlay: the original, bit for bit
    assert diff[mask == 255].mean() > 20  # a random-weights model paints noise where it regenerates
    assert "Masked content: fill" in info["infotexts"][0] and "Mask blur" not in info["infotexts"][0]


def test_blurred_edge_is_original_beyond_the_kernel(url: str) -> None:
    original, mask = picture(), square_mask()
    out, info = inpaint(url, original, mask, mask_blur=4)
    reach = kernel_width(4) // 2  # 10 pixels each side of the mask's edge
    far = np.ones_like(mask, bool)
    far[20 - reach : 44 + reach, 20 - reach : 44 + reach] = False
    assert (change(out, original)[far] == 0).all()
    assert "Mask blur: 4" in info["infotexts"][0]


def test_fill_modes_each_start_the_masked_area_differently(url: str) -> None:
    original, mask = picture(), square_mask()
    outs, texts = [], []
    for fill in range(4):  # a low strength lets the start show through the tiny model's noise
        out, info = inpaint(url, original, mask, inpainting_fill=fill, denoising_strength=0.3)
        outs.append(out)
        texts.append(info["infotexts"][0])
    inside, outside = mask == 255, mask == 0
    for i in range(4):
        assert (outs[i][outside] == original[outside]).all()
        for j in range(i):
            assert change(outs[i], outs[j])[inside].mean() > 3, (i, j)
    assert "Masked content: fill" in texts[0] and "Masked content" not in texts[1]  # original: no key
    assert "Masked content: latent noise" in texts[2] and "Masked content: latent nothing" in texts[3]


def _edge_profile(url: str, original: np.ndarray, **fields: Any) -> np.ndarray:
    """Per column, how much the result differs from the original: a right-half mask, a vertical edge."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    out, _ = inpaint(url, original, mask, **fields)
    return change(out, original).mean(0)


def test_mask_blur_softens_the_transition_across_the_edge(url: str) -> None:
    original = picture()
    sharp = _edge_profile(url, original, mask_blur=0)
    # mask_blur (when given) sets both axes, as A1111's property does: null leaves the axes alone
    soft = _edge_profile(url, original, mask_blur=None, mask_blur_x=6, mask_blur_y=0)
    along = _edge_profile(url, original, mask_blur=None, mask_blur_x=0, mask_blur_y=6)
    # no blur: unchanged up to column 31, a jump at the edge
    assert (sharp[:32] == 0).all() and sharp[32] > 20
    # horizontal blur: the change ramps in over several columns, the steepest step is much smaller
    ramp = soft[24:40]
    assert (ramp > 0).sum() >= 10 and np.abs(np.diff(soft)).max() < 0.6 * np.abs(np.diff(sharp)).max()
    # vertical blur of a vertical edge changes nothing: the blur is separable, axis by axis
    assert (along[:32] == 0).all() and np.abs(np.diff(along)).max() > 0.8 * np.abs(np.diff(sharp)).max()


def test_invert_regenerates_what_is_not_masked(url: str) -> None:
    original, mask = picture(), square_mask()
    out, info = inpaint(url, original, mask, inpainting_mask_invert=True)
    diff = change(out, original)
    assert (diff[mask == 255] == 0).all() and diff[mask == 0].mean() > 20
    assert "Mask mode: Inpaint not masked" in info["infotexts"][0]
    same, _ = inpaint(url, original, mask, inpainting_mask_invert=1)  # A1111's UI sends 0/1
    assert (same == out).all()


def test_only_masked_keeps_the_original_size_and_changes_only_the_mask(url: str) -> None:
    original = picture(96, 80)
    mask = square_mask(96, 80, (60, 10, 76, 26))
    out, info = inpaint(url, original, mask, inpaint_full_res=True, inpaint_full_res_padding=4)
    assert out.shape == (80, 96, 3)  # the init image's size, not width x height
    diff = change(out, original)
    assert (diff[mask == 0] == 0).all() and diff[mask == 255].mean() > 20
    text = info["infotexts"][0]
    assert "Inpaint area: Only masked, Masked area padding: 4" in text and "Size: 64x64" in text


def test_only_masked_with_a_blank_mask_is_plain_img2img(url: str) -> None:
    original = picture()
    out, info = inpaint(url, original, np.zeros((64, 64), np.uint8), inpaint_full_res=True)
    body = {**BASE, "init_images": [b64(original)]}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=120)
    plain = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
    assert (out == plain).all()  # A1111 falls back to img2img without a mask
    assert "Inpaint area" not in info["infotexts"][0]


def test_a_white_mask_kept_original_is_plain_img2img(url: str) -> None:
    """Regenerating everything from the original: blending and overlay change nothing."""
    original = picture()
    everything = np.full((64, 64), 255, np.uint8)
    for sampler in ("Euler a", "DDIM"):
        out, _ = inpaint(url, original, everything, inpainting_fill=1, sampler_name=sampler)
        body = {**BASE, "init_images": [b64(original)], "sampler_name": sampler}
        r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=120)
        plain = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
        assert (out == plain).all(), sampler


def test_alpha_of_an_rgba_mask_marks_the_area(url: str) -> None:
    original, mask = picture(), square_mask()
    rgba = np.zeros((64, 64, 4), np.uint8)  # black colour everywhere: only the alpha says where
    rgba[..., 3] = np.where(mask == 255, 200, 60)  # thresholded at > 128, as A1111 does
    by_alpha, _ = inpaint(url, original, Image.fromarray(rgba))
    by_colour, _ = inpaint(url, original, mask)
    assert (by_alpha == by_colour).all()


def test_outpainting_a_transparent_border(url: str) -> None:
    """Outpainting is inpainting of new canvas: the old picture kept, the transparent band drawn anew."""
    canvas = np.zeros((64, 64, 4), np.uint8)
    canvas[:, :40, :3] = picture()[:, :40]
    canvas[:, :40, 3] = 255  # the right 24 columns are transparent: A1111 flattens them onto white
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 40:] = 255
    out, info = inpaint(url, canvas, mask, inpainting_fill=2, denoising_strength=1.0)
    assert (out[:, :40] == canvas[:, :40, :3]).all()
    assert change(out[:, 40:], np.full((64, 24, 3), 255))[...].mean() > 20  # not the white it started as
    assert "Masked content: latent noise" in info["infotexts"][0]


def test_noise_multiplier(url: str) -> None:
    original, mask = picture(), square_mask()
    plain, _ = inpaint(url, original, mask)
    quiet, info = inpaint(url, original, mask, initial_noise_multiplier=0.5)
    assert change(plain, quiet)[mask == 255].mean() > 5 and (plain[mask == 0] == quiet[mask == 0]).all()
    assert "Noise multiplier: 0.5" in info["infotexts"][0]
    opt, _ = inpaint(url, original, mask, override_settings={"initial_noise_multiplier": 0.5})
    assert (opt == quiet).all()  # the A1111 option, per request
    bad = httpx.post(url + "/sdapi/v1/txt2img", json={**BASE, "initial_noise_multiplier": 0.5})
    assert bad.status_code == 422 and bad.json()["field"] == "initial_noise_multiplier"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mask": "not base64!"}, "mask"),
        ({"mask_blur": 65}, "mask_blur"),
        ({"mask_blur_x": -1}, "mask_blur_x"),
        ({"inpainting_fill": 4}, "inpainting_fill"),
        ({"inpainting_mask_invert": 2}, "inpainting_mask_invert"),
        ({"inpaint_full_res": "yes"}, "inpaint_full_res"),
        ({"inpaint_full_res_padding": -4}, "inpaint_full_res_padding"),
        ({"initial_noise_multiplier": 3}, "initial_noise_multiplier"),
        ({"resize_mode": 3}, "resize_mode"),
        ({"latent_mask": "x"}, "latent_mask"),
        ({"override_settings": {"inpainting_mask_weight": 2}}, "override_settings.inpainting_mask_weight"),
    ],
)
def test_bad_inpainting_fields_are_refused_by_name(url: str, fields: dict[str, Any], field: str) -> None:
    body = {**BASE, "init_images": [b64(picture())], "mask": b64(square_mask()), **fields}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_a_mask_on_txt2img_is_refused(url: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**BASE, "mask": b64(square_mask())}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "mask" and "img2img" in r.json()["detail"]
