"""Inpainting checkpoints (9-channel UNets): the tiny one over real HTTP, single files detected and served
offline, and the configs of the real ones derived from the shipped standard configs."""

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
from safetensors.torch import save_file

from knsd.bench.ldm import pipeline_to_ldm
from knsd.serve.http.app import create_app
from knsd.serve.models.families.detect import detect, read_shapes
from knsd.serve.models.loader import load_model
from knsd.serve.settings import ServeSettings
from tests.helpers import running, start_serve, wait_for
from tests.test_inpaint import BASE, b64, change, picture, square_mask


@pytest.fixture(scope="module")
def inpaint_model(cache: Path) -> Any:
    return load_model("tiny-inpaint", cache, device="cpu")


@pytest.fixture(scope="module")
def url(inpaint_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=inpaint_model)
    with running(app, "/readyz") as base:
        yield base


def _post(url: str, route: str, body: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    r = httpx.post(url + route, json=body, timeout=120)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    return np.asarray(image.convert("RGB")).astype(int), json.loads(r.json()["info"])


def test_the_tiny_inpainting_model_has_a_9_channel_unet(inpaint_model: Any) -> None:
    assert inpaint_model.denoiser.config.in_channels == 9
    assert inpaint_model.denoiser.conv_in.weight.shape[1] == 9


def test_inpainting_model_inpaints_with_its_mask_channels(url: str) -> None:
    original, mask = picture(), square_mask()
    body = {**BASE, "init_images": [b64(original)], "mask": b64(mask)}
    out, info = _post(url, "/sdapi/v1/img2img", body)
    diff = change(out, original)
    assert (diff[mask == 0] == 0).all() and diff[mask == 255].mean() > 20
    assert info["is_using_inpainting_conditioning"] is True
    text = info["infotexts"][0]
    assert "Denoising strength: 0.75, Conditional mask weight: 1.0" in text
    # the model sees the masked image: with weight 0 it sees the whole original, and paints differently
    # (slightly, with random weights; the same channels ignored would give the same pixels)
    seeing, info = _post(
        url, "/sdapi/v1/img2img", {**body, "override_settings": {"inpainting_mask_weight": 0}}
    )
    assert (change(seeing, out)[mask == 255] > 0).mean() > 0.5
    assert "Conditional mask weight: 0.0" in info["infotexts"][0]


def test_inpainting_model_serves_txt2img_and_hires(url: str) -> None:
    out, info = _post(url, "/sdapi/v1/txt2img", {**BASE, "enable_hr": True, "hr_scale": 2})
    assert out.shape == (128, 128, 3)
    assert info["is_using_inpainting_conditioning"] is False  # A1111: txt2img's grey conditioning
    plain, _ = _post(url, "/sdapi/v1/img2img", {**BASE, "init_images": [b64(picture())]})
    assert plain.shape == (64, 64, 3)


def test_an_inpainting_single_file_is_detected_and_served_offline(
    url: str, cache: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tiny-inpainting.safetensors"
    pristine = load_model("tiny-inpaint", cache, device="cpu")  # a server's add-ons grow the token table
    save_file(pipeline_to_ldm(pristine.txt2img), str(path))
    detected = detect(path, read_shapes(path))
    assert (detected.family.name, detected.variant) == ("sd1", "tiny-inpaint")
    proc, base = start_serve(cache, "--model", str(path), "--no-warmup", log=tmp_path / "serve.log")
    try:
        wait_for(base + "/readyz", 180)
        models = httpx.get(base + "/sdapi/v1/sd-models").json()
        assert models[0]["title"].startswith("tiny-inpainting.safetensors [")
        original, mask = picture(), square_mask()
        body = {**BASE, "init_images": [b64(original)], "mask": b64(mask)}
        out, info = _post(base, "/sdapi/v1/img2img", body)
        assert info["is_using_inpainting_conditioning"] is True
        assert (change(out, original)[mask == 0] == 0).all()
        assert (out == _post(url, "/sdapi/v1/img2img", body)[0]).all()  # the same model, the same pixels
    finally:
        proc.terminate()
        proc.wait(30)


def _shapes(conv_in: tuple[int, ...], **extra: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"model.diffusion_model.input_blocks.0.0.weight": conv_in, **extra}


@pytest.mark.parametrize(
    ("shapes", "family", "variant"),
    [
        (_shapes((320, 9, 3, 3)), "sd1", "sd15-inpainting"),
        (_shapes((320, 9, 3, 3), **{"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024)}),
         "sd2", "sd2-inpainting"),
        (_shapes((320, 9, 3, 3), **{"conditioner.embedders.1.model.positional_embedding": (77, 1280)}),
         "sdxl", "sdxl-inpainting"),
        (_shapes((16, 9, 3, 3)), "sd1", "tiny-inpaint"),
    ],
)  # fmt: skip
def test_detection_of_inpainting_checkpoints(shapes: dict[str, Any], family: str, variant: str) -> None:
    detected = detect(Path("model.safetensors"), shapes)
    assert (detected.family.name, detected.variant) == (family, variant)


def test_instruct_pix2pix_is_still_refused() -> None:
    from knsd.errors import ModelError

    with pytest.raises(ModelError, match="8-channel UNet"):
        detect(Path("ip2p.safetensors"), _shapes((320, 8, 3, 3)))


@pytest.mark.parametrize(("variant", "base"), [("sd15-inpainting", "sd15"), ("sd2-inpainting", "sd21-base"),
                                               ("sdxl-inpainting", "sdxl-base")])  # fmt: skip
def test_inpainting_configs_are_their_base_with_a_9_channel_input(
    variant: str, base: str, cache: Path
) -> None:
    import diffusers
    from accelerate import init_empty_weights

    from knsd.serve.models.families.standard import config_dir

    folder, base_folder = config_dir(variant, cache), config_dir(base, cache)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    base_unet = json.loads((base_folder / "unet" / "config.json").read_text())
    assert unet == {**base_unet, "in_channels": 9}
    for part in ("vae", "text_encoder", "scheduler"):  # everything else as the base
        config = next((folder / part).glob("*.json")).read_text()
        assert config == next((base_folder / part).glob("*.json")).read_text()
    with init_empty_weights():  # the shape A1111's detection reads: conv_in takes 9 channels
        model = diffusers.UNet2DConditionModel.from_config(unet)
    assert tuple(model.conv_in.weight.shape) == (320, 9, 3, 3)
