"""Add-ons end to end over real HTTP on the tiny model: LoRA, ControlNet units, /controlnet/*, embeddings."""

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

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 3, "seed": 7, "cfg_scale": 5}


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(np.int16)


def _checker() -> str:
    grid = (np.indices((64, 64)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    return _b64(Image.fromarray(np.stack([grid] * 3, axis=-1)))


@pytest.fixture(scope="module")
def client(tiny_model: Any, cache: Path) -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _txt2img(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, **body})
    assert r.status_code == 200, r.text
    out = dict(r.json())
    out["info"] = json.loads(out["info"])["infotexts"][0]
    # A NaN image decodes to black: "changed" must never mean "broken".
    assert all(_pixels(image).std() > 5 for image in out["images"])
    return out


def test_lora_changes_the_image_and_restores_exactly(client: httpx.Client) -> None:
    base = _pixels(_txt2img(client)["images"][0])
    lora = _txt2img(client, prompt="a cat <lora:tiny-lora:1>")
    assert np.abs(_pixels(lora["images"][0]) - base).mean() > 1.0
    assert 'Lora hashes: "tiny-lora: ' in lora["info"]
    zero = _txt2img(client, prompt="a cat <lora:tiny-lora:0>")
    assert np.array_equal(_pixels(zero["images"][0]), base)
    # te=0 / unet=0 each keep half of the change; the next plain request gives the base pixels again.
    unet_only = _pixels(_txt2img(client, prompt="a cat <lora:tiny-lora:te=0:unet=1>")["images"][0])
    assert not np.array_equal(unet_only, base) and not np.array_equal(unet_only, _pixels(lora["images"][0]))
    assert np.array_equal(_pixels(_txt2img(client)["images"][0]), base)


def test_unknown_lora_is_a_422_listing_the_installed(client: httpx.Client) -> None:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "<lora:nope:0.5> a cat"})
    assert r.status_code == 422 and r.json()["field"] == "prompt"
    assert "'nope'" in r.json()["detail"] and "tiny-lora" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "<lora:tiny-lora:x> a cat"})
    assert r.status_code == 422 and "'x' is not a number" in r.json()["detail"]


def test_lora_listing_and_refresh_find_new_files(client: httpx.Client, tiny_model: Any) -> None:
    items = client.get("/sdapi/v1/loras").json()
    assert items[0]["name"] == "tiny-lora" and items[0]["alias"] == "tiny-lora"
    assert items[0]["metadata"]["ss_network_dim"] == "4" and Path(items[0]["path"]).is_file()
    copy = Path(items[0]["path"]).with_name("second.safetensors")
    copy.write_bytes(Path(items[0]["path"]).read_bytes())
    try:
        assert client.post("/sdapi/v1/refresh-loras").json() is None
        assert [i["name"] for i in client.get("/sdapi/v1/loras").json()] == ["second", "tiny-lora"]
        # Two LoRAs at once, the second found without a restart.
        both = _txt2img(client, prompt="a cat <lora:tiny-lora:0.5> <lora:second:0.5>")
        one = _txt2img(client, prompt="a cat <lora:tiny-lora:1>")
        assert np.abs(_pixels(both["images"][0]) - _pixels(one["images"][0])).max() <= 1
        assert "tiny-lora: " in both["info"] and "second: " in both["info"]
    finally:
        copy.unlink()
        client.post("/sdapi/v1/refresh-loras")


def _unit(**kw: Any) -> dict[str, Any]:
    return {"enabled": True, "module": "canny", "model": "tiny-canny", "image": _checker(), **kw}


def _controlnet(client: httpx.Client, *units: dict[str, Any], **body: Any) -> dict[str, Any]:
    return _txt2img(client, alwayson_scripts={"controlnet": {"args": list(units)}}, **body)


def test_controlnet_units(client: httpx.Client) -> None:
    base = _pixels(_txt2img(client)["images"][0])
    one = _controlnet(client, _unit())
    assert np.abs(_pixels(one["images"][0]) - base).mean() > 0.5
    # The detected map comes after the image (sd-webui-controlnet), unless save_detected_map is false.
    edges = _pixels(one["images"][1])
    assert len(one["images"]) == 2 and edges.shape == (64, 64, 3) and edges.min() == 0 and edges.max() == 255
    assert len(_controlnet(client, _unit(save_detected_map=False))["images"]) == 1
    assert '"Module: canny, Model: tiny-canny [' in one["info"] and "Control Mode: Balanced" in one["info"]
    for off in (_unit(weight=0), _unit(enabled=False)):
        assert np.array_equal(_pixels(_controlnet(client, off)["images"][0]), base)
    two = _controlnet(client, _unit(), _unit(module="invert", control_mode="ControlNet is more important"))
    assert not np.array_equal(_pixels(two["images"][0]), _pixels(one["images"][0]))
    assert "ControlNet 1" in two["info"]
    prompt_mode = _controlnet(client, _unit(control_mode="My prompt is more important"))
    assert not np.array_equal(_pixels(prompt_mode["images"][0]), _pixels(one["images"][0]))
    assert np.array_equal(_pixels(_txt2img(client)["images"][0]), base)


def _stripes() -> str:
    """Vertical bars: edges in one direction only, unlike the checkerboard's."""
    bars = (np.indices((64, 64))[1] // 16 % 2 * 255).astype(np.uint8)
    return _b64(Image.fromarray(np.stack([bars] * 3, axis=-1)))


def test_controlnet_follows_its_control_image(client: httpx.Client) -> None:
    """The control image steers the result: the same image gives the same pixels, another image others.

    "Changed the image" alone would pass a unit that adds a constant; here the result must depend on
    which control image was sent, and its detected map must be that image's edges."""
    checker = _controlnet(client, _unit(image=_checker()))
    again = _controlnet(client, _unit(image=_checker()))
    stripes = _controlnet(client, _unit(image=_stripes()))
    assert np.array_equal(_pixels(checker["images"][0]), _pixels(again["images"][0]))
    difference = np.abs(_pixels(checker["images"][0]) - _pixels(stripes["images"][0])).mean()
    assert difference > 0.5, difference
    # Each detected map is its own control image's edges: the bars have no horizontal edges.
    bars_map = _pixels(stripes["images"][1])[:, :, 0]
    checker_map = _pixels(checker["images"][1])[:, :, 0]
    assert not np.array_equal(bars_map, checker_map)
    assert (bars_map[:, 4:60].max(axis=1) == bars_map[:, 4:60].max(axis=1)[0]).all()  # same on every row


def test_controlnet_with_img2img_uses_the_init_image(client: httpx.Client) -> None:
    body = {**SMALL, "init_images": [_checker()], "denoising_strength": 0.7}
    plain = client.post("/sdapi/v1/img2img", json=body)
    unit = {"enabled": True, "module": "none", "model": "tiny-canny"}
    controlled = client.post(
        "/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    )
    assert plain.status_code == 200 and controlled.status_code == 200, controlled.text
    assert not np.array_equal(_pixels(plain.json()["images"][0]), _pixels(controlled.json()["images"][0]))


@pytest.mark.parametrize(
    ("unit", "field"),
    [
        (_unit(module="depth"), "alwayson_scripts.controlnet.args[0].module"),
        (_unit(model="nope"), "alwayson_scripts.controlnet.args[0].model"),
        (_unit(weight=3), "alwayson_scripts.controlnet.args[0].weight"),
        (_unit(resize_mode="Stretch"), "alwayson_scripts.controlnet.args[0].resize_mode"),
        (_unit(image=None), "alwayson_scripts.controlnet.args[0].image"),
    ],
)
def test_bad_units_are_422s(client: httpx.Client, unit: dict[str, Any], field: str) -> None:
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    if field.endswith("module"):  # a module that needs annotator weights names the file it needs
        assert "midas/dpt_hybrid-midas-501f0c75.pt" in r.json()["detail"]
    if field.endswith("model"):
        assert "tiny-canny [" in r.json()["detail"]


def test_controlnet_endpoints(client: httpx.Client) -> None:
    assert client.get("/controlnet/version").json() == {"version": 3}
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert types["Canny"]["default_option"] == "canny" and types["Canny"]["default_model"].startswith(
        "tiny-canny ["
    )
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert len(models) == 1 and models[0].startswith("tiny-canny [")
    modules = client.get("/controlnet/module_list").json()
    assert modules["module_list"][0] == "none" and {"canny", "invert"} <= set(modules["module_list"])
    assert modules["module_detail"]["canny"]["sliders"][1] == {
        "name": "Low Threshold",
        "value": 100,
        "min": 1,
        "max": 255,
        "step": 1,
    }
    r = client.post(
        "/controlnet/detect",
        json={
            "controlnet_module": "canny",
            "controlnet_input_images": [_checker()],
            "controlnet_processor_res": 64,
        },
    )
    assert r.status_code == 200 and r.json()["info"] == "Success"
    edges = _pixels(r.json()["images"][0])
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    inverted = client.post(
        "/controlnet/detect",
        json={
            "controlnet_module": "invert",
            "controlnet_input_images": [_checker()],
            "controlnet_processor_res": 64,
        },
    ).json()["images"][0]
    assert np.array_equal(_pixels(inverted), 255 - _pixels(_checker()))
    r = client.post(
        "/controlnet/detect", json={"controlnet_module": "openpose", "controlnet_input_images": [_checker()]}
    )
    assert r.status_code == 422 and r.json()["field"] == "controlnet_module"


def test_embeddings(client: httpx.Client) -> None:
    listed = client.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"]["tiny-emb"] == {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": 32,
        "vectors": 2,
    }
    base = _pixels(_txt2img(client, prompt="a cat")["images"][0])
    used = _txt2img(client, prompt="a tiny-emb cat")
    assert not np.array_equal(_pixels(used["images"][0]), base)
    assert 'TI hashes: "tiny-emb: ' in used["info"]
    assert client.post("/sdapi/v1/refresh-embeddings").json() is None


def test_addon_metrics(client: httpx.Client) -> None:
    _txt2img(client, prompt="a cat <lora:tiny-lora:0.5>")
    _txt2img(client, prompt="a cat <lora:tiny-lora:0.5>")
    text = client.get("/metrics").text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("knsd_")
    }
    assert values["knsd_lora_cache_misses_total"] >= 1 and values["knsd_lora_cache_hits_total"] >= 1
    assert values['knsd_addon_load_seconds_count{kind="lora"}'] == values["knsd_lora_cache_misses_total"]
    assert values['knsd_lora_patch_seconds_count{op="patch"}'] >= 2
    assert values['knsd_lora_patch_seconds_count{op="restore"}'] >= 2


def test_controlnet_batches_draw_their_own_ancestral_noise(client: httpx.Client) -> None:
    """The ControlNet pipeline is built once per request; each n_iter batch still samples with its own
    scheduler, so batch 2 (seed + 1) is the image a lone request with seed + 1 makes."""
    body = {**SMALL, "sampler_name": "Euler a"}
    both = _controlnet(client, _unit(), n_iter=2, **body)
    alone = _controlnet(client, _unit(), **{**body, "seed": SMALL["seed"] + 1})
    assert np.abs(_pixels(both["images"][1]) - _pixels(alone["images"][0])).max() <= 1
