"""ControlNet units in generation, over real HTTP on the tiny model and its tiny ControlNet: the fields the
extension honours (advanced_weighting, guidance window, hr_option, effective_region_mask, mask_image,
control modes) and its model-side modules (reference, inpaint_only, tile_colorfix, recolor, shuffle).

Most checks are equalities that only the extension's rule predicts (two different requests giving the same
pixels), so a server that ignored the field, or applied it differently, would fail them."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running
from tests.test_controlnet_preprocessors import ref_shuffle

SMALL = {
    "prompt": "a cat",
    "width": 64,
    "height": 64,
    "steps": 4,
    "seed": 7,
    "cfg_scale": 5,
    "sampler_name": "Euler",
}
HIRES = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_second_pass_steps": 3}


def _b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(np.int16)


def _checker(size: int = 64, cell: int = 8) -> np.ndarray:
    grid = (np.indices((size, size)).sum(0) // cell % 2 * 255).astype(np.uint8)
    return np.stack([grid] * 3, axis=-1)


def _photo(size: int = 64) -> np.ndarray:
    y, x = np.indices((size, size))
    img = np.stack([x * 4, y * 4, 255 - x * 2], axis=-1)
    img[(y - 30) ** 2 + (x - 20) ** 2 < 120] = (250, 40, 30)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def client(tiny_model: Any, cache: Path) -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as url, httpx.Client(base_url=url, timeout=300) as c:
        yield c


def _unit(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "module": "canny", "model": "tiny-canny", "image": _b64(_checker()), **fields}


def _run(
    client: httpx.Client, *units: dict[str, Any], route: str = "txt2img", **body: Any
) -> list[np.ndarray]:
    payload = {**SMALL, **body, "alwayson_scripts": {"controlnet": {"args": list(units)}}}
    r = client.post(f"/sdapi/v1/{route}", json=payload)
    assert r.status_code == 200, r.text
    images = [_pixels(b) for b in r.json()["images"]]
    assert images[0].std() > 5  # never a black (NaN) image
    return images


@pytest.fixture(scope="module")
def plain(client: httpx.Client) -> np.ndarray:
    return _run(client)[0]


def test_advanced_weighting_replaces_the_scales(client: httpx.Client, plain: np.ndarray) -> None:
    assert np.array_equal(_run(client, _unit(advanced_weighting=[0.0] * 13))[0], plain)
    # the weight is not applied on top: ones at weight 0.4 are Balanced at weight 1
    assert np.array_equal(
        _run(client, _unit(weight=0.4, advanced_weighting=[1.0] * 13))[0], _run(client, _unit(weight=1.0))[0]
    )
    # past the list's end residuals are dropped (the tiny ControlNet has 6 down residuals and the middle one)
    assert np.array_equal(
        _run(client, _unit(advanced_weighting=[0.8] * 6))[0],
        _run(client, _unit(advanced_weighting=[0.8] * 6 + [0.0]))[0],
    )
    assert not np.array_equal(_run(client, _unit(advanced_weighting=[0.8] * 6))[0], plain)


def test_guidance_window_sees_a1111s_lagging_step(client: httpx.Client, plain: np.ndarray) -> None:
    """A1111 evaluates step i with the fraction max(i - 1, 0) / steps: with 4 steps the fractions are
    0, 0, 0.25, 0.5, so a window starting at 0.6 never opens and windows ending at 0 and 0.2 are equal."""
    assert np.array_equal(_run(client, _unit(guidance_start=0.6))[0], plain)
    assert not np.array_equal(_run(client, _unit(guidance_start=0.5))[0], plain)
    end0 = _run(client, _unit(guidance_end=0.0))[0]
    assert not np.array_equal(end0, plain)
    assert np.array_equal(_run(client, _unit(guidance_end=0.2))[0], end0)
    assert not np.array_equal(_run(client, _unit(guidance_end=0.25))[0], end0)


def test_control_modes(client: httpx.Client, plain: np.ndarray) -> None:
    balanced = _run(client, _unit())[0]
    prompt = _run(client, _unit(control_mode="My prompt is more important"))[0]
    control = _run(client, _unit(control_mode="ControlNet is more important"))[0]
    assert len({balanced.tobytes(), prompt.tobytes(), control.tobytes(), plain.tobytes()}) == 4
    # without CFG there are no unconditional rows to keep the control off: the two soft modes are equal
    no_cfg = {"cfg_scale": 1}
    assert np.array_equal(
        _run(client, _unit(control_mode="My prompt is more important"), **no_cfg)[0],
        _run(client, _unit(control_mode="ControlNet is more important"), **no_cfg)[0],
    )


def test_hr_option_picks_the_passes(client: httpx.Client) -> None:
    both = _run(client, _unit(), **HIRES)
    assert [im.shape[:2] for im in both] == [(128, 128), (128, 128), (64, 64)]  # image, hires map, low map
    low = _run(client, _unit(hr_option="Low res only"), **HIRES)
    high = _run(client, _unit(hr_option="High res only"), **HIRES)
    none = _run(client, **HIRES)[0]
    assert len({both[0].tobytes(), low[0].tobytes(), high[0].tobytes(), none.tobytes()}) == 4
    # a low-res-only unit and a high-res-only unit over the same model are one unit acting in both passes
    split = _run(client, _unit(hr_option="Low res only"), _unit(hr_option="High res only"), **HIRES)
    assert np.array_equal(split[0], both[0]) and len(split) == 5
    # without hires fix hr_option is not read
    assert np.array_equal(_run(client, _unit(hr_option="High res only"))[0], _run(client, _unit())[0])


def test_effective_region_mask(client: httpx.Client, plain: np.ndarray) -> None:
    everywhere = _run(client, _unit())[0]
    assert np.array_equal(
        _run(client, _unit(effective_region_mask=_b64(np.zeros((16, 16), np.uint8))))[0], plain
    )
    white = np.full((16, 16), 255, np.uint8)
    assert np.array_equal(_run(client, _unit(effective_region_mask=_b64(white)))[0], everywhere)
    top = np.zeros((64, 64), np.uint8)
    top[:32] = 255
    size = {"width": 256, "height": 256}
    big_plain = _run(client, **size)[0]
    big_full = _run(client, _unit(image=_b64(_checker(256, 16))), **size)[0]
    region = _run(client, _unit(image=_b64(_checker(256, 16)), effective_region_mask=_b64(top)), **size)[0]
    inside = np.abs(region - big_plain)[:128].mean()
    outside = np.abs(region - big_plain)[192:].mean()  # the UNet spreads a little past the region's edge
    assert inside > 2 * outside
    assert outside < 0.5 * np.abs(big_full - big_plain)[192:].mean()


def test_mask_image_is_the_canvas_scribble(client: httpx.Client) -> None:
    """For non-inpaint modules the extension feeds a (non-empty, non-full) mask to the preprocessor
    instead of the image: canny then outlines the mask."""
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:40] = 255
    images = _run(client, _unit(image=_b64(_photo()), mask_image=_b64(mask), processor_res=64))
    expected = cv2.Canny(np.stack([mask] * 3, axis=-1), 100, 200)
    assert np.array_equal(images[1][:, :, 0], expected)
    full = _run(
        client,
        _unit(image=_b64(_photo()), mask_image=_b64(np.full((64, 64), 255, np.uint8)), processor_res=64),
    )
    assert np.array_equal(full[1][:, :, 0], cv2.Canny(_photo(), 100, 200))
    r = client.post(
        "/sdapi/v1/txt2img",
        json={
            **SMALL,
            "alwayson_scripts": {"controlnet": {"args": [_unit(mask=_b64(mask), mask_image=_b64(mask))]}},
        },
    )
    assert r.status_code == 422 and r.json()["field"].endswith("mask_image")


def test_inpaint_only_keeps_the_original_outside_the_mask(client: httpx.Client, plain: np.ndarray) -> None:
    original = _photo()
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 40:] = 255
    images = _run(client, _unit(module="inpaint_only", image=_b64(original), mask=_b64(mask)))
    # dilated by 7 and box-blurred by 7: from column 40 - 7 on the paste-back weight is above 0
    assert np.array_equal(images[0][:, :30], original[:, :30].astype(np.int16))
    assert not np.array_equal(images[0][:, 44:], original[:, 44:].astype(np.int16))
    shown = Image.open(
        io.BytesIO(
            base64.b64decode(
                _raw(client, _unit(module="inpaint_only", image=_b64(original), mask=_b64(mask)))[1]
            )
        )
    )
    assert shown.mode == "RGBA" and np.asarray(shown)[0, 50, 3] == 128 and np.asarray(shown)[0, 10, 3] == 255


def _raw(client: httpx.Client, *units: dict[str, Any], **body: Any) -> list[str]:
    r = client.post(
        "/sdapi/v1/txt2img", json={**SMALL, **body, "alwayson_scripts": {"controlnet": {"args": list(units)}}}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["images"])


def test_recolor_sets_the_brightness(client: httpx.Client, plain: np.ndarray) -> None:
    source = _photo()
    images = _run(client, _unit(module="recolor_luminance", image=_b64(source)))
    lightness = cv2.cvtColor(source, cv2.COLOR_BGR2LAB)[:, :, 0]  # the extension reads RGB as BGR here
    assert np.array_equal(images[1][:, :, 0], lightness)
    out = cv2.cvtColor(images[0].astype(np.uint8), cv2.COLOR_RGB2LAB)[:, :, 0].astype(int)
    before = cv2.cvtColor(plain.astype(np.uint8), cv2.COLOR_RGB2LAB)[:, :, 0].astype(int)
    assert np.abs(out - lightness).mean() < 2 < np.abs(before - lightness).mean()


def test_shuffle_is_seeded_as_the_extension(client: httpx.Client) -> None:
    source = _photo()
    unit = _unit(module="shuffle", image=_b64(source), pixel_perfect=True)  # pixel perfect: resolution 64
    assert np.array_equal(_run(client, unit, seed=42)[1], ref_shuffle(source, 64, 84))  # seed + seed
    assert np.array_equal(_run(client, unit, seed=42, subseed=5)[1], ref_shuffle(source, 64, 47))


def test_reference_units(client: httpx.Client, plain: np.ndarray) -> None:
    ref = _b64(_photo())
    unit = {"enabled": True, "model": "None", "image": ref}
    only = _run(client, {**unit, "module": "reference_only"})
    adain = _run(client, {**unit, "module": "reference_adain"})
    both = _run(client, {**unit, "module": "reference_adain+attn"})
    assert len({plain.tobytes(), only[0].tobytes(), adain[0].tobytes(), both[0].tobytes()}) == 4
    assert np.array_equal(only[1], _photo().astype(np.int16))  # the map is the reference itself
    # the weight is a depth threshold: 0 lets no layer take part
    assert np.array_equal(_run(client, {**unit, "module": "reference_adain+attn", "weight": 0})[0], plain)
    fidelity = _run(
        client, {**unit, "module": "reference_only", "control_mode": "ControlNet is more important"}
    )
    assert not np.array_equal(fidelity[0], only[0])
    r = client.post(
        "/sdapi/v1/txt2img",
        json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [
            {**unit, "module": "reference_only", "effective_region_mask": ref}]}}},
    )  # fmt: skip
    assert r.status_code == 422 and r.json()["field"].endswith("effective_region_mask")


def test_tile_colorfix(client: httpx.Client, plain: np.ndarray) -> None:
    ref = _b64(_photo())
    fixed = _run(client, _unit(module="tile_colorfix", image=ref))[0]
    sharp = _run(client, _unit(module="tile_colorfix+sharp", image=ref))[0]
    assert len({plain.tobytes(), fixed.tobytes(), sharp.tobytes()}) == 3
    assert np.array_equal(_run(client, _unit(module="tile_colorfix", image=ref, weight=0))[0], plain)


def test_invalid_unit_values_are_logged(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="knsd.serve"):
        _run(client, _unit(processor_res=-100, threshold_a=-100, threshold_b=300))
    assert "[canny.processor_res] Invalid value(-100), using default value 512." in caplog.text
    assert "[canny.threshold_a] Invalid value(-100.0), using default value 100." in caplog.text
    assert "[canny.threshold_b] Invalid value(300.0), using default value 200." in caplog.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hr_option": "Sometimes"}, "hr_option"),
        ({"advanced_weighting": [1, "x"]}, "advanced_weighting[1]"),
        ({"advanced_weighting": 1}, "advanced_weighting"),
        ({"model": "None"}, "model"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start"),
        ({"union_control_type": "Depth"}, "union_control_type"),
        ({"input_mode": "merge"}, "input_mode"),
        ({"effective_region_mask": "not an image"}, "effective_region_mask"),
    ],
)
def test_bad_unit_fields_are_422s(client: httpx.Client, fields: dict[str, Any], field: str) -> None:
    r = client.post(
        "/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [_unit(**fields)]}}}
    )
    assert r.status_code == 422 and r.json()["field"] == f"alwayson_scripts.controlnet.args[0].{field}", (
        r.text
    )


def test_response_carries_each_units_maps(client: httpx.Client) -> None:
    units = [_unit(), _unit(save_detected_map=False), {"enabled": False, "module": "canny"}]
    assert len(_raw(client, *units)) == 2
    info = json.loads(
        client.post(
            "/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": units}}}
        ).json()["info"]
    )
    assert "ControlNet 0" in info["infotexts"][0] and "ControlNet 1" in info["infotexts"][0]


def _img2img(client: httpx.Client, *units: dict[str, Any], **body: Any) -> tuple[list[np.ndarray], str]:
    payload = {**SMALL, "init_images": [_b64(_photo())], "denoising_strength": 0.75, **body}
    payload["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    r = client.post("/sdapi/v1/img2img", json=payload)
    assert r.status_code == 200, r.text
    return [_pixels(b) for b in r.json()["images"]], json.loads(r.json()["info"])["infotexts"][0]


def _square_mask() -> np.ndarray:
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 24:40] = 255
    return mask


def test_inpaint_units_take_a1111s_mask(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    """Without an image of their own, inpaint units take the init image and img2img's mask, blurred by
    mask_blur as the extension prepares it; inpaint_only beside A1111's inpainting runs as inpaint."""
    import logging

    unit = {"enabled": True, "module": "inpaint_only", "model": "tiny-canny"}
    body = {"mask": _b64(_square_mask()), "mask_blur": 6, "inpaint_full_res": False}
    with caplog.at_level(logging.WARNING, logger="knsd.serve"):
        images, info = _img2img(client, unit, **body)
    assert "Falls back to inpaint_global_harmonious" in caplog.text and "Module: inpaint," in info
    blurred = _square_mask()
    for ksize, axis in ((2 * int(2.5 * 6 + 0.5) + 1, 0), (2 * int(2.5 * 6 + 0.5) + 1, 1)):
        blurred = cv2.GaussianBlur(blurred, (ksize, 1) if axis == 0 else (1, ksize), 6)
    shown = Image.open(io.BytesIO(base64.b64decode(_raw_img2img(client, unit, **body)[1])))
    assert np.array_equal(np.asarray(shown)[:, :, 3], 255 - np.where(blurred > 127, 255, 0) // 2)
    assert np.array_equal(np.asarray(shown)[:, :, :3], _photo())


def _raw_img2img(client: httpx.Client, *units: dict[str, Any], **body: Any) -> list[str]:
    payload = {**SMALL, "init_images": [_b64(_photo())], "denoising_strength": 0.75, **body}
    payload["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    r = client.post("/sdapi/v1/img2img", json=payload)
    assert r.status_code == 200, r.text
    return list(r.json()["images"])


def test_only_masked_inpainting_crops_the_units_input(client: httpx.Client) -> None:
    body = {
        "mask": _b64(_square_mask()),
        "mask_blur": 0,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 4,
    }
    unit = _unit(image=_b64(_checker(64, 4)), processor_res=64)
    cropped = _img2img(client, unit, **body)[0][1]
    whole = _img2img(client, {**unit, "inpaint_crop_input_image": False}, **body)[0][1]
    assert np.array_equal(whole[:, :, 0], cv2.Canny(_checker(64, 4), 100, 200))  # not cropped
    # the mask's box (rows 20-43, columns 24-39) padded by 4 and widened to the square frame: rows and
    # columns 16-47, enlarged (Lanczos) to 64 x 64, then canny
    crop = Image.fromarray(_checker(64, 4)[16:48, 16:48]).resize((64, 64), Image.Resampling.LANCZOS)
    assert np.array_equal(cropped[:, :, 0], cv2.Canny(np.asarray(crop), 100, 200))
    ref = {"enabled": True, "module": "reference_only", "model": "None", "image": _b64(_checker(64, 4))}
    assert np.array_equal(
        _img2img(client, ref, **body)[0][1], _checker(64, 4).astype(np.int16)
    )  # not cropped
