"""ControlNet's weight-free preprocessors and map fitting against references written here from the
behaviour described in sd-webui-controlnet's documentation and the project's research notes (not from
knsd's code), and small hand-worked vectors.

During development knsd's outputs were also compared with the extension's own functions run on the same
inputs (bit-identical for every module and resize mode); those comparisons need the extension's AGPL code
and stay outside the repository.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from knsd.serve.addons.controlnet.fit import fit_map, pixel_perfect_res, visualize
from knsd.serve.addons.controlnet.imageops import PREPROCESSORS, hwc3
from knsd.serve.addons.controlnet.thin import thin


def _photo(h: int = 90, w: int = 120, seed: int = 3) -> np.ndarray:
    """A deterministic 'photo': smooth gradients, a dark disc, a bright square and some noise."""
    rng = np.random.RandomState(seed)
    y, x = np.indices((h, w))
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], axis=-1).astype(np.float64)
    img[(y - h // 2) ** 2 + (x - w // 3) ** 2 < (h // 5) ** 2] = (20, 30, 40)
    img[h // 5 : h // 2, 2 * w // 3 : 2 * w // 3 + w // 6] = (240, 235, 230)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


# -- the reference: the notes' description of each module, written independently ---------------------------
def _pad(img: np.ndarray, res: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = img.shape[:2]
    k = res / min(h, w)
    nh, nw = int(np.round(h * k)), int(np.round(w * k))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    ph, pw = int(np.ceil(nh / 64) * 64) - nh, int(np.ceil(nw / 64) * 64) - nw
    return np.pad(r, ((0, ph), (0, pw), (0, 0)), mode="edge"), (nh, nw)


def ref_canny(img: np.ndarray, res: int, a: float, b: float) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    return np.repeat(cv2.Canny(p, int(a), int(b))[:h, :w, None], 3, axis=2)


def ref_xdog(img: np.ndarray, res: int, a: float) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    f = p.astype(np.float32)
    m = np.min(cv2.GaussianBlur(f, (0, 0), 5.0) - cv2.GaussianBlur(f, (0, 0), 0.5), axis=2)
    v = 255 - np.clip(255 - m, 0, 255).astype(np.uint8).astype(np.int64)
    edge = (2 * v) % 256 > a  # the extension doubles in uint8, which wraps
    out = np.zeros_like(p)
    out[edge] = 255
    return out[:h, :w]


def ref_shuffle(img: np.ndarray, res: int, seed: int) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    im = p[:h, :w]
    rs = np.random.RandomState(seed)

    def disk() -> np.ndarray:
        u = rs.uniform(0, 1, size=(h // 256 + 2, w // 256 + 2, 1))
        n = cv2.resize(u, (w + 512, h + 512), interpolation=cv2.INTER_CUBIC)[256 : 256 + h, 256 : 256 + w]
        n = n - n.min()
        return (n / n.max())[:, :, None]

    x = disk() * float(w - 1)
    y = disk() * float(h - 1)
    return cv2.remap(im, np.concatenate([x, y], axis=2).astype(np.float32), None, cv2.INTER_LINEAR)


def ref_lineart(img: np.ndarray, res: int) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    x = p.astype(np.float32)
    i = np.clip(np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2), 0, 255)
    lines = i[i > 8]
    i = i / max(16, np.median(lines) if lines.size else 0) * 127
    return np.repeat(np.clip(i, 0, 255).astype(np.uint8)[:h, :w, None], 3, axis=2)


def ref_color(img: np.ndarray, res: int) -> np.ndarray:
    h, w = img.shape[:2]
    nh, nw = (res, int(round(w / h * res))) if h < w else (int(round(h / w * res)), res)
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    s = cv2.resize(r, (nw // 64, nh // 64), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(s, (nw, nh), interpolation=cv2.INTER_NEAREST)


def ref_threshold(img: np.ndarray, res: int, a: float) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    out = np.zeros_like(p)
    out[np.min(p, axis=2) > a] = 255
    return out[:h, :w]


def ref_blur(img: np.ndarray, res: int, a: float) -> np.ndarray:
    p, (h, w) = _pad(img, res)
    return cv2.GaussianBlur(p[:h, :w], (0, 0), a)


def ref_recolor(img: np.ndarray, a: float, luminance: bool) -> np.ndarray:
    code, channel = (cv2.COLOR_BGR2LAB, 0) if luminance else (cv2.COLOR_BGR2HSV, 2)
    c = cv2.cvtColor(img, code)[:, :, channel].astype(np.float32) / 255
    return np.repeat(np.clip(c**a * 255, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def ref_tile(img: np.ndarray, a: float) -> np.ndarray:
    if a < 1.1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (int(w / a), int(h / a)), interpolation=cv2.INTER_AREA)


CASES: list[tuple[str, int, float, float, Any]] = [
    ("canny", 64, 100, 200, lambda im: ref_canny(im, 64, 100, 200)),
    ("canny", 200, 30, 90, lambda im: ref_canny(im, 200, 30, 90)),
    ("scribble_xdog", 96, 32, 0, lambda im: ref_xdog(im, 96, 32)),
    ("scribble_xdog", 128, 5.5, 0, lambda im: ref_xdog(im, 128, 5.5)),
    ("lineart_standard", 100, 0, 0, lambda im: ref_lineart(im, 100)),
    ("color", 128, 0, 0, lambda im: ref_color(im, 128)),
    ("threshold", 72, 127, 0, lambda im: ref_threshold(im, 72, 127)),
    ("threshold", 72, 60.5, 0, lambda im: ref_threshold(im, 72, 60.5)),
    ("blur_gaussian", 80, 9.0, 0, lambda im: ref_blur(im, 80, 9.0)),
    ("blur_gaussian", 150, 1.7, 0, lambda im: ref_blur(im, 150, 1.7)),
    ("recolor_luminance", 512, 1.0, 0, lambda im: ref_recolor(im, 1.0, True)),
    ("recolor_luminance", 512, 0.4, 0, lambda im: ref_recolor(im, 0.4, True)),
    ("recolor_intensity", 512, 1.6, 0, lambda im: ref_recolor(im, 1.6, False)),
    ("tile_resample", 512, 1.0, 0, lambda im: ref_tile(im, 1.0)),
    ("tile_resample", 512, 2.5, 0, lambda im: ref_tile(im, 2.5)),
    ("invert", 0, 0, 0, lambda im: 255 - im),
    ("none", 512, 0, 0, lambda im: im),
]


@pytest.mark.parametrize(("module", "res", "a", "b", "reference"), CASES)
def test_preprocessor_matches_the_reference(
    module: str, res: int, a: float, b: float, reference: Any
) -> None:
    img = _photo()
    out = PREPROCESSORS[module](img, res, a, b, None)
    expected = reference(img)
    assert out.shape == expected.shape and out.dtype == np.uint8
    assert np.array_equal(out, expected)


def test_shuffle_draws_from_the_given_generator() -> None:
    img = _photo()
    out = PREPROCESSORS["shuffle"](img, 96, 0, 0, np.random.RandomState(84))
    assert np.array_equal(out, ref_shuffle(img, 96, 84))
    assert not np.array_equal(out, PREPROCESSORS["shuffle"](img, 96, 0, 0, np.random.RandomState(85)))


def test_resized_maps_have_the_short_side_at_processor_res() -> None:
    # 364 x 358 at 512: k = 1.4302..., 364 k = 520.58 -> 521 (the notes' portrait case)
    img = np.zeros((364, 358, 3), np.uint8)
    assert PREPROCESSORS["canny"](img, 512, 100, 200, None).shape == (521, 512, 3)
    assert PREPROCESSORS["invert"](img, 512, 0, 0, None).shape == (364, 358, 3)  # invert keeps the size


def test_scribble_xdog_wraps_like_uint8() -> None:
    """Where the difference of Gaussians doubles past 255 the extension's uint8 arithmetic wraps, so very
    strong edges are *not* edges: a black square on white, whose inside darkens by 128 to 144."""
    img = np.full((64, 64, 3), 255, np.uint8)
    img[26:38, 26:38] = 0
    f = img.astype(np.float32)
    v = np.clip(np.min(cv2.GaussianBlur(f, (0, 0), 5.0) - cv2.GaussianBlur(f, (0, 0), 0.5), axis=2), 0, 255)
    assert (
        (v.astype(np.uint8) >= 128) & (v.astype(np.uint8) <= 144)
    ).any()  # doubled: 0 to 32 after the wrap
    out = PREPROCESSORS["scribble_xdog"](img, 64, 32, 0, None)
    assert np.array_equal(out, ref_xdog(img, 64, 32))
    unwrapped = np.zeros_like(img)
    unwrapped[2 * v.astype(np.int64) > 32] = 255
    assert not np.array_equal(out, unwrapped)


def test_lineart_standard_without_lines_is_black() -> None:
    # no pixel more than 8 darker than its surroundings: the median is undefined, the divisor is 16
    assert not PREPROCESSORS["lineart_standard"](np.full((64, 64, 3), 128, np.uint8), 64, 0, 0, None).any()


def test_rgba_composites_over_white() -> None:
    # 100 * 128/255 + 255 * (1 - 128/255) = 177.2; 50 -> 152.1; 0 -> 127.0, which float32 makes
    # 126.99999 and the uint8 cast truncates to 126, as the extension's float32 arithmetic does
    px = np.array([[[100, 50, 0, 128]]], np.uint8)
    assert hwc3(px).tolist() == [[[177, 152, 126]]]
    assert hwc3(np.array([[7]], np.uint8)).tolist() == [[[7, 7, 7]]]


def test_thinning_keeps_one_pixel() -> None:
    bar = np.zeros((20, 40), np.uint8)
    bar[8:13, 5:35] = 255
    thinned = thin(bar, prune=False)
    columns = (thinned[:, 8:32] > 0).sum(axis=0)
    assert set(columns.tolist()) == {1}  # every column crossed by the bar keeps exactly one pixel


def test_fit_keeps_one_pixel_edges_and_palettes() -> None:
    line = np.zeros((32, 32, 3), np.uint8)
    idx = np.arange(32)
    line[idx, idx] = 255
    big = fit_map(line, 96, 96, "Just Resize")
    assert set(np.unique(big).tolist()) == {0, 255}
    # a diagonal through 96 x 96, one pixel wide (8-connected), not a 3-pixel smear from cubic upscaling
    assert 80 <= (big[:, :, 0] > 0).sum() <= 110
    palette = np.zeros((30, 40, 3), np.uint8)
    palette[:, 10:] = (200, 10, 10)
    palette[:, 25:] = (10, 200, 10)
    out = fit_map(palette, 50, 70, "Just Resize")  # three colours: nearest neighbour, no new colours
    assert {tuple(c) for c in out.reshape(-1, 3)} <= {(0, 0, 0), (200, 10, 10), (10, 200, 10)}


def test_fit_resize_modes() -> None:
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 60  # left half dark grey, right half black
    img[:, 40:] = 200
    crop = fit_map(img, 40, 40, "Crop and Resize")  # k = max(1, 0.5) = 1: the centre 40 columns
    assert crop.shape == (40, 40, 3) and crop[:, :20].mean() == 60 and crop[:, 20:].mean() == 200
    fill = fit_map(img, 40, 40, "Resize and Fill")  # k = 0.5: 40 x 20 in the middle, the border median
    assert fill.shape == (40, 40, 3)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert (fill[0] == np.median(border, axis=0).astype(np.uint8)).all() and (fill[10:30, :20] == 60).all()
    rgba = np.concatenate([img, np.full((40, 80, 1), 100, np.uint8)], axis=2)
    rgba[:, 60:, 3] = 200
    out = fit_map(rgba, 40, 40, "Resize and Fill", inpaint=True)
    assert out.dtype == np.float32 and set(np.unique(out[:, :, 3]).tolist()) == {0.0, 255.0}
    assert (out[0, :, 3] == 255).all()  # the filled margin is marked to inpaint
    assert visualize(out)[0, 0, 3] == 255 - 255 // 2


def test_pixel_perfect_resolution() -> None:
    portrait = np.zeros((768, 512, 3), np.uint8)
    assert pixel_perfect_res(portrait, 64, 64, "Crop and Resize") == 64  # max(64/768, 64/512) * 512
    assert pixel_perfect_res(portrait, 64, 64, "Resize and Fill") == 43  # min(...) * 512 = 42.67
