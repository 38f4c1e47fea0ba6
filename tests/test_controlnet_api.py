"""sd-webui-controlnet's listing and detect routes over real HTTP on the tiny model, compared with the
extension's own answers (tests/data/controlnet_extension_api.json, computed by running the extension)."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.addons.controlnet.catalog import Catalog
from knsd.serve.addons.controlnet.modules import MODULES
from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

EXTENSION = json.loads((Path(__file__).parent / "data" / "controlnet_extension_api.json").read_text())
WEIGHT_FREE = {
    "none", "invert", "canny", "blur_gaussian", "scribble_xdog", "shuffle", "tile_resample", "tile_colorfix",
    "tile_colorfix+sharp", "threshold", "color", "lineart_standard", "recolor_luminance", "recolor_intensity",
    "reference_only", "reference_adain", "reference_adain+attn", "inpaint", "inpaint_only",
}  # fmt: skip


def _b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def client(tiny_model: Any, cache: Path) -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _answer(key: str) -> Any:
    return next(v for k, v in EXTENSION.items() if k.startswith(key))


@pytest.mark.parametrize("alias", [False, True])
def test_module_list_is_the_extensions_for_the_modules_that_run(client: httpx.Client, alias: bool) -> None:
    got = client.get("/controlnet/module_list", params={"alias_names": str(alias).lower()}).json()
    names = {m.name for m in MODULES if m.name in WEIGHT_FREE}
    want = _answer(f"GET /controlnet/module_list?alias_names={str(alias).lower()}")
    labels = {m.alias if alias else m.name: m.name for m in MODULES}
    expected = [key for key in want["module_list"] if labels[key] in names]
    assert got["module_list"] == expected  # the extension's order, restricted to what this server runs
    assert set(got["module_detail"]) == set(got["module_list"])
    assert got["module_detail"] == {k: want["module_detail"][k] for k in expected}
    assert got["module_detail"]["canny"]["model_free"] is False  # "needs no ControlNet model file"
    assert got["module_detail"]["reference_only"]["model_free"] is True
    assert client.get("/controlnet/module_list", params={"alias_names": "maybe"}).status_code == 422


def test_catalog_with_every_module_is_the_extensions_answer(tmp_path: Path) -> None:
    """With every module implemented and every annotator file present, the listings are the extension's."""
    for module in MODULES:
        for name in module.files:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"")
    catalog = Catalog(tmp_path, implemented=frozenset(m.name for m in MODULES))
    for alias in (False, True):
        assert catalog.module_list(alias) == _answer(
            f"GET /controlnet/module_list?alias_names={str(alias).lower()}"
        )
    with_models = _answer("GET /controlnet/control_types (models")
    titles = [
        "control_v11p_sd15_canny [d14c016b]",
        "control_v11p_sd15_inpaint [ebff9138]",
        "tiny-canny [8f335c7d]",
    ]
    assert catalog.control_types(titles) == with_models
    assert catalog.control_types([]) == _answer("GET /controlnet/control_types (no models")


def test_control_types_keep_every_tag_with_runnable_modules(client: httpx.Client) -> None:
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert len(types) == 21 and {"Depth", "OpenPose", "IP-Adapter", "Reference", "Inpaint"} <= set(types)
    assert types["Depth"]["module_list"] == ["none"] and types["Depth"]["default_option"] == "none"
    assert types["Reference"]["module_list"] == [
        "none",
        "reference_only",
        "reference_adain+attn",
        "reference_adain",
    ]
    assert types["Canny"]["default_model"].startswith("tiny-canny [")
    assert types["All"]["model_list"][0] == "None"


def test_a_module_that_needs_weights_names_its_files(client: httpx.Client, tiny_model: Any) -> None:
    r = client.post(
        "/controlnet/detect", json={"controlnet_module": "openpose_full", "controlnet_input_images": [""]}
    )
    assert r.status_code == 422 and r.json()["field"] == "controlnet_module"
    detail = r.json()["detail"]
    assert "openpose/body_pose_model.pth" in detail and "annotator" in detail
    listed = client.get("/controlnet/module_list").json()["module_list"]
    assert "openpose_full" not in listed and "depth" not in listed


def test_files_alone_do_not_list_an_unimplemented_module(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    depth = next(m for m in MODULES if m.name == "depth")
    (tmp_path / "midas").mkdir()
    (tmp_path / depth.files[0]).write_bytes(b"weights")
    assert "depth" not in catalog.module_list(False)["module_list"]
    with pytest.raises(Exception, match="not implemented by knsd"):
        catalog.require(depth, "module")


def _detect(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/controlnet/detect", json=body)


def test_detect_refuses_as_the_extension(client: httpx.Client) -> None:
    img = _b64(np.zeros((64, 64, 3), np.uint8))
    cases = [
        ({"controlnet_module": "nope", "controlnet_input_images": [img]}, "Module not available"),
        ({"controlnet_module": "clip_vision", "controlnet_input_images": [img]}, "Module not supported"),
        ({"controlnet_module": "canny", "controlnet_input_images": []}, "No image selected"),
        (
            {"controlnet_module": "inpaint_only", "controlnet_input_images": [img]},
            "requires `controlnet_masks`",
        ),
    ]
    for body, words in cases:
        r = _detect(client, **body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    r = _detect(client, controlnet_module="canny", controlnet_input_images=[img], low_vram="yes")
    assert r.status_code == 422 and r.json()["field"] == "low_vram"


def test_detect_with_masks_and_low_vram(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.zeros((48, 40, 3), np.uint8)
    rgb[:, :, 1] = 90
    mask = np.zeros((48, 40), np.uint8)
    mask[10:20] = 255
    r = _detect(
        client,
        controlnet_module="inpaint_global_harmonious",  # a label works as the name does
        controlnet_input_images=[_b64(rgb)],
        controlnet_masks=[_b64(mask)],
        low_vram=True,
    )
    assert r.status_code == 200, r.text
    shown = _image(r.json()["images"][0])
    assert shown.mode == "RGBA" and shown.size == (40, 48)  # the input's size: inpaint does not resize
    alpha = np.asarray(shown)[:, :, 3]
    assert alpha[15, 5] == 255 - 255 // 2 and alpha[30, 5] == 255  # 255 - mask // 2
    with caplog.at_level(logging.INFO, logger="knsd.serve"):
        r = _detect(
            client,
            controlnet_module="canny",
            controlnet_input_images=[_b64(rgb)],
            controlnet_masks=[_b64(mask)],
        )
    assert r.status_code == 200 and "Preprocessor canny does not accept mask. Mask ignored" in caplog.text
    r = _detect(
        client,
        controlnet_module="inpaint",
        controlnet_input_images=[_b64(rgb)],
        controlnet_masks=[_b64(mask[:10])],
    )
    assert r.status_code == 422 and r.json()["field"] == "controlnet_masks[0]"


def test_detect_logs_invalid_values_in_the_extensions_words(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    img = _b64((np.indices((64, 64)).sum(0) % 16 * 16).astype(np.uint8))
    with caplog.at_level(logging.INFO, logger="knsd.serve"):
        r = _detect(
            client,
            controlnet_module="canny",
            controlnet_input_images=[img],
            controlnet_processor_res=-100,
            controlnet_threshold_a=-100,
            controlnet_threshold_b=-1,  # -1 means "the default" and is not reported
        )
    assert r.status_code == 200
    assert "[canny.processor_res] Invalid value(-100), using default value 512." in caplog.text
    assert "[canny.threshold_a] Invalid value(-100.0), using default value 100." in caplog.text
    assert "threshold_b" not in caplog.text
    assert _image(r.json()["images"][0]).size == (512, 512)  # the default resolution was used


def test_detect_runs_each_listed_module(client: httpx.Client) -> None:
    img = _b64((np.random.RandomState(0).rand(70, 90, 3) * 255).astype(np.uint8))
    mask = _b64(np.zeros((70, 90), np.uint8))
    for name in client.get("/controlnet/module_list").json()["module_list"]:
        r = _detect(client, controlnet_module=name, controlnet_input_images=[img], controlnet_masks=[mask],
                    controlnet_processor_res=64)  # fmt: skip
        assert r.status_code == 200 and len(r.json()["images"]) == 1, (name, r.text)


def _constant_nets(folder: Path, hed_bias: float, line_bias: float) -> None:
    """HED and line networks whose outputs are constants: every projection (the last convolution) has zero
    weights and the given bias."""
    import torch

    from knsd.serve.addons.controlnet.annotators import anime_network, hed_network, lineart_network

    hed, line, anime = hed_network(), lineart_network(), anime_network()
    with torch.no_grad():
        for i in range(1, 6):
            projection = getattr(hed, f"block{i}").projection
            projection.weight.zero_()
            projection.bias.fill_(hed_bias)
        line.model4[1].weight.zero_()
        line.model4[1].bias.fill_(line_bias)
        anime.model.model[3].weight.zero_()  # the outermost transposed convolution, before the tanh
        anime.model.model[3].bias.fill_(0.0)
    (folder / "hed").mkdir(parents=True, exist_ok=True)
    (folder / "lineart").mkdir(parents=True, exist_ok=True)
    torch.save(hed.state_dict(), folder / "hed" / "ControlNetHED.pth")
    torch.save(line.state_dict(), folder / "lineart" / "sk_model.pth")
    (folder / "lineart_anime").mkdir(parents=True, exist_ok=True)  # saved from DataParallel: "module." keys
    torch.save(
        {f"module.{k}": v for k, v in anime.state_dict().items()}, folder / "lineart_anime" / "netG.pth"
    )


@pytest.fixture(scope="module")
def annotated(
    tiny_model: Any, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("annotator")
    _constant_nets(folder, 2.0, 8.0)
    settings = ServeSettings(cache=cache, warmup=False, controlnet_annotator_models_path=folder)
    with (
        running(create_app(settings, model=tiny_model), "/readyz") as url,
        httpx.Client(base_url=url, timeout=120) as c,
    ):
        yield c


def test_modules_with_weights_are_listed_when_their_files_are_there(annotated: httpx.Client) -> None:
    listed = annotated.get("/controlnet/module_list").json()["module_list"]
    assert {"hed", "hed_safe", "scribble_hed", "lineart"} <= set(listed)
    assert "lineart_coarse" not in listed and "lineart_anime" in listed  # sk_model2.pth is not there
    types = annotated.get("/controlnet/control_types").json()["control_types"]
    assert "softedge_hed" in types["SoftEdge"]["module_list"]


def test_weight_modules_run_their_networks(annotated: httpx.Client) -> None:
    img = _b64((np.random.RandomState(1).rand(60, 90, 3) * 255).astype(np.uint8))

    def detect(module: str) -> np.ndarray:
        r = _detect(
            annotated, controlnet_module=module, controlnet_input_images=[img], controlnet_processor_res=64
        )
        assert r.status_code == 200, r.text
        return np.asarray(_image(r.json()["images"][0]))

    # every HED stage projects to the bias 2: sigmoid(2) = 0.8808, x 255 = 224.6 -> 224
    hed = detect("softedge_hed")
    assert hed.shape == (64, 96, 3) and (hed == 224).all()
    # safe: 0.8808 x 3 = 2.64 -> 2, / 2 = 1.0 -> 255
    assert (detect("softedge_hedsafe") == 255).all()
    # lines: sigmoid(8) = 0.99966 -> 254; inverted to white lines on black: 1
    assert (detect("lineart_realistic") == 1).all()
    # tanh(0) x 127.5 + 127.5 = 127.5 -> 127, inverted: 128
    assert (detect("lineart_anime") == 128).all()
    r = _detect(annotated, controlnet_module="lineart_coarse", controlnet_input_images=[img])
    assert r.status_code == 422 and "lineart/sk_model2.pth" in r.json()["detail"]


def test_a_broken_weight_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "hed").mkdir()
    (tmp_path / "hed" / "ControlNetHED.pth").write_bytes(b"not a checkpoint")
    catalog = Catalog(tmp_path)
    hed = next(m for m in MODULES if m.name == "hed")
    with pytest.raises(Exception, match="hed/ControlNetHED.pth could not be loaded"):
        catalog.run(hed, np.zeros((64, 64, 3), np.uint8), 64, 0, 0, None)
