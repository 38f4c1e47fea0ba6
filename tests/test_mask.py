"""The pure mask and resize helpers (knsd.serve.api.mask, knsd.serve.api.resize) on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from knsd.serve.api.mask import (
    apply_overlay,
    binary_mask,
    blur_mask,
    crop_region,
    expand_region,
    fill_masked,
    invert_mask,
    kernel_width,
    overlay_of,
)
from knsd.serve.api.resize import flatten, resize_image


def _mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = 255
    return Image.fromarray(pixels)


def test_kernel_width_is_a1111s() -> None:
    # 2 * int(2.5 * sigma + 0.5) + 1: sigma 4 -> 21 taps, sigma 1 -> 7, sigma 64 -> 321
    assert [kernel_width(s) for s in (1, 4, 64)] == [7, 21, 321]


def test_binary_mask_reads_alpha_of_a_transparent_rgba_mask() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)  # black everywhere: the colour says "keep"
    rgba[..., 3] = [[0, 100, 129, 255]] * 4  # but the alpha ramps up
    rounded = np.asarray(binary_mask(Image.fromarray(rgba)))
    assert rounded[0].tolist() == [0, 0, 255, 255]  # thresholded at > 128
    soft = np.asarray(binary_mask(Image.fromarray(rgba), round_alpha=False))
    assert soft[0].tolist() == [0, 100, 129, 255]


def test_binary_mask_of_opaque_or_rgb_masks_is_their_luminance() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)
    rgb[1, 1] = (100, 100, 100)
    assert np.asarray(binary_mask(Image.fromarray(rgb))).tolist() == [[255, 0], [0, 100]]
    opaque = np.dstack([rgb, np.full((2, 2), 255, np.uint8)])
    assert np.asarray(binary_mask(Image.fromarray(opaque))).tolist() == [[255, 0], [0, 100]]


def test_invert_swaps_kept_and_masked() -> None:
    mask = _mask(8, 8, (2, 2, 6, 6))
    assert (np.asarray(invert_mask(mask)) == 255 - np.asarray(mask)).all()


def test_blur_is_separable_and_horizontal_first() -> None:
    # a vertical white bar: blurring along y changes nothing inside the image; along x it spreads
    bar = _mask(64, 16, (30, 0, 34, 16))
    only_y = np.asarray(blur_mask(bar, 0, 4))
    assert (only_y == np.asarray(bar)).all()
    only_x = np.asarray(blur_mask(bar, 4, 0))
    row = only_x[8].astype(int)
    assert (only_x == only_x[:1]).all()  # every row the same: nothing moved vertically
    assert 0 < row[20] < row[25] < row[31] and row[19] == 0 == row[44]  # 21 taps: 10 beside columns 30-33
    assert abs(row.sum() - 4 * 255) <= 64 * 1  # the blur keeps the bar's mass (rounding: 1 per pixel)


def test_blur_zero_is_identity() -> None:
    mask = _mask(16, 16, (4, 4, 9, 12))
    assert (np.asarray(blur_mask(mask, 0, 0)) == np.asarray(mask)).all()


def test_crop_region_bounds_the_mask_with_padding_inside_the_image() -> None:
    mask = _mask(100, 80, (10, 20, 30, 40))
    assert crop_region(mask, 0) == (10, 20, 30, 40)
    assert crop_region(mask, 15) == (0, 5, 45, 55)
    assert crop_region(_mask(10, 10, (0, 0, 0, 0)), 4) is None


@pytest.mark.parametrize(
    ("box", "size", "image", "expected"),
    [
        ((100, 100, 228, 132), (512, 512), (512, 512), (100, 52, 228, 180)),  # 128x32 -> 128x128
        ((0, 0, 32, 8), (64, 64), (64, 64), (0, 0, 32, 32)),  # would start above 0: slid down
        ((10, 56, 42, 64), (64, 64), (64, 64), (10, 32, 42, 64)),  # would end below: slid up
        ((0, 0, 64, 64), (64, 32), (64, 64), (0, 0, 64, 64)),  # 2:1 needs 128 wide: clamped
    ],
)
def test_expand_region_takes_the_processing_aspect(box, size, image, expected) -> None:
    assert expand_region(box, *size, *image) == expected


def test_fill_paints_the_hole_with_surrounding_colours() -> None:
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :16] = (200, 30, 30)  # red left half
    pixels[:, 16:] = (30, 30, 200)  # blue right half
    pixels[8:24, 8:24] = (0, 255, 0)  # a green square to paint over
    mask = _mask(32, 32, (8, 8, 24, 24))
    filled = np.asarray(fill_masked(Image.fromarray(pixels), mask)).astype(int)
    hole = filled[8:24, 8:24]
    assert hole[..., 1].max() < 80  # no green left
    assert hole[:, 0, 0].mean() > hole[:, 0, 2].mean() and hole[:, -1, 2].mean() > hole[:, -1, 0].mean()
    outside = np.asarray(_mask(32, 32, (8, 8, 24, 24))) == 0
    assert np.abs(filled[outside] - pixels[outside]).max() <= 1  # kept pixels stay (premultiplied rounding)


def test_overlay_restores_kept_pixels_exactly() -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    result = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mask = _mask(16, 16, (4, 4, 12, 12))
    out = np.asarray(apply_overlay(result, overlay_of(original, mask)))
    keep = np.asarray(mask) == 0
    assert (out[keep] == np.asarray(original)[keep]).all()
    assert (out[~keep] == np.asarray(result)[~keep]).all()


def test_overlay_pastes_a_crop_back_at_its_box() -> None:
    original = Image.new("RGB", (40, 30), (10, 20, 30))
    result = Image.new("RGB", (16, 16), (250, 0, 0))  # generated at the processing size
    mask = _mask(40, 30, (12, 6, 20, 14))
    out = np.asarray(apply_overlay(result, overlay_of(original, mask), paste_to=(10, 4, 12, 12)))
    assert out.shape == (30, 40, 3)
    assert out[10, 15].tolist() == [250, 0, 0]  # inside the mask: the result
    assert out[0, 0].tolist() == [10, 20, 30] and out[5, 11].tolist() == [10, 20, 30]


def test_resize_modes() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 1))  # a red top row
    assert resize_image(0, image, 32, 32).size == (32, 32)
    cropped = np.asarray(resize_image(1, image, 32, 32))  # 64x32 scaled, 16 cut from each side
    assert cropped.shape == (32, 32, 3) and cropped[16, 16].tolist() == [0, 0, 255]
    filled = np.asarray(resize_image(2, image, 32, 32))  # 32x16 in the middle, bands above and below
    assert filled[0, 16, 0] > 200 and filled[31, 16, 2] > 200  # the red top row, the blue bottom row


def test_flatten_composites_transparency_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert np.asarray(flatten(rgba)).tolist() == [[[255, 255, 255], [10, 20, 30]]]
