"""A1111's remaining endpoints, styles and the OpenAPI document over real HTTP on the tiny model."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "a (cat:1.2)", "width": 64, "height": 64, "steps": 2, "seed": 3}
STYLES = 'name,prompt,negative_prompt\nphoto,"photo of {prompt}, 8k",blurry\nsharp,sharp focus,\n'


@pytest.fixture(scope="module")
def app(tiny_model, cache: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    styles = tmp_path_factory.mktemp("styles") / "styles.csv"
    styles.write_text(STYLES, encoding="utf-8")
    settings = ServeSettings(cache=cache, styles_files=(styles,), api_auth=(("u", "secret"),))
    return create_app(settings, model=tiny_model)


@pytest.fixture(scope="module")
def client(app) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with running(app, "/readyz") as url, httpx.Client(base_url=url, auth=("u", "secret"), timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def generated(client: httpx.Client) -> str:
    r = client.post(
        "/sdapi/v1/txt2img", json={**SMALL, "styles": ["photo", "sharp"], "negative_prompt": "ugly"}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["images"][0])


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_styles_are_applied_and_listed(client: httpx.Client, generated: str) -> None:
    text = _image(generated).text["parameters"]
    assert text.startswith("photo of a (cat:1.2), 8k, sharp focus\nNegative prompt: ugly, blurry\n")
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "photo", "prompt": "photo of {prompt}, 8k", "negative_prompt": "blurry"},
        {"name": "sharp", "prompt": "sharp focus", "negative_prompt": ""},
    ]
    r = client.post("/sdapi/v1/txt2img", json={**SMALL, "styles": ["nope"]})
    assert r.status_code == 422 and r.json()["field"] == "styles" and "'photo', 'sharp'" in r.json()["detail"]


def test_png_info_round_trip(client: httpx.Client, generated: str) -> None:
    body = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + generated}).json()
    assert body["info"] == _image(generated).text["parameters"]
    assert body["items"] == {}
    p = body["parameters"]
    assert (p["Prompt"], p["Negative prompt"], p["Styles array"]) == (
        "a (cat:1.2)",
        "ugly",
        ["photo", "sharp"],
    )
    assert (p["Steps"], p["Seed"], p["Size-1"], p["Size-2"], p["Model"]) == ("2", "3", "64", "64", "tiny-sd")
    assert p["Clip skip"] == "1" and p["Emphasis"] == "Original"


def test_png_info_without_metadata_and_bad_input(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    body = client.post(
        "/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()}
    ).json()
    assert body["info"] == "" and body["items"] == {} and body["parameters"]["Prompt"] == ""
    for bad in ({"image": "not base64!"}, {"image": 5}, {}):
        r = client.post("/sdapi/v1/png-info", json=bad)
        assert r.status_code == 422 and r.json()["field"] == "image", r.text
    assert client.post("/sdapi/v1/png-info", json=[1]).status_code == 400


def test_listings_have_a1111_shapes(client: httpx.Client) -> None:
    get = lambda path: client.get("/sdapi/v1/" + path).json()  # noqa: E731
    assert [u["name"] for u in get("upscalers")] == ["None", "Lanczos", "Nearest"]
    assert get("upscalers")[1] == {
        "name": "Lanczos",
        "model_name": None,
        "model_path": None,
        "model_url": None,
        "scale": 4,
    }
    assert get("latent-upscale-modes")[0] == {"name": "Latent"} and len(get("latent-upscale-modes")) == 6
    assert get("hypernetworks") == [] and get("face-restorers") == []
    assert get("realesrgan-models") == [] and get("sd-vae") == []
    # The tiny model comes with the tiny add-ons (knsd/serve/addons/tiny.py; tested in test_addons*.py).
    assert [item["name"] for item in get("loras")] == ["tiny-lora"]
    assert list(get("embeddings")["loaded"]) == ["tiny-emb"] and get("embeddings")["skipped"] == {}
    assert get("scripts") == {
        "txt2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot", "controlnet"],
        "img2img": [
            "prompt matrix",
            "prompts from file or textbox",
            "x/y/z plot",
            "sd upscale",
            "controlnet",
        ],
    }
    assert [(s["name"], s["is_img2img"], s["is_alwayson"]) for s in get("script-info")] == [
        ("prompt matrix", False, False),
        ("prompts from file or textbox", False, False),
        ("x/y/z plot", False, False),
        ("prompt matrix", True, False),
        ("prompts from file or textbox", True, False),
        ("x/y/z plot", True, False),
        ("sd upscale", True, False),
        ("controlnet", False, True),
        ("controlnet", True, True),
    ]
    for path in ("skip", "refresh-loras", "refresh-embeddings", "refresh-checkpoints", "refresh-vae"):
        r = client.post("/sdapi/v1/" + path)
        assert r.status_code == 200 and r.text == "null", path


def test_memory_and_cmd_flags(client: httpx.Client) -> None:
    mem = client.get("/sdapi/v1/memory").json()
    assert set(mem["ram"]) == {"free", "used", "total"} and 0 < mem["ram"]["used"] < mem["ram"]["total"]
    assert mem["cuda"] == {"error": "unavailable"}
    flags = client.get("/sdapi/v1/cmd-flags")
    assert flags.json()["api"] is True and flags.json()["styles_file"][0].endswith("styles.csv")
    assert "secret" not in flags.text  # credentials are never echoed (A1111 does echo them)


def test_extra_single_image_upscales_and_keeps_metadata(client: httpx.Client, generated: str) -> None:
    r = client.post("/sdapi/v1/extra-single-image", json={"image": generated, "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    out = _image(r.json()["image"])
    assert out.size == (128, 128)
    assert out.text["parameters"] == _image(generated).text["parameters"]
    assert out.text["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    same = client.post("/sdapi/v1/extra-single-image", json={"image": generated}).json()
    assert same["html_info"] == "<p></p>" and _image(same["image"]).size == (64, 64)


def test_extra_batch_images_scale_to_with_crop(client: httpx.Client, generated: str) -> None:
    body = {
        "imageList": [{"data": generated, "name": "a"}, {"data": generated, "name": "b"}],
        "upscaler_1": "Nearest",
        "resize_mode": 1,
        "upscaling_resize_w": 100,
        "upscaling_resize_h": 80,
        "upscaler_2": "Lanczos",
        "extras_upscaler_2_visibility": 0.5,
    }
    r = client.post("/sdapi/v1/extra-batch-images", json=body)
    assert r.status_code == 200, r.text
    assert [_image(i).size for i in r.json()["images"]] == [(100, 80), (100, 80)]
    assert r.json()["html_info"] == (
        "<p>Postprocess upscale to: 100x80, Postprocess crop to: 100x80, Postprocess upscaler: Nearest, "
        "Postprocess upscaler 2: Lanczos</p>"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
        ({"upscaler_2": 3}, "upscaler_2"),
        ({"gfpgan_visibility": 0.5}, "gfpgan_visibility"),
        ({"codeformer_visibility": 2}, "codeformer_visibility"),
        ({"upscaling_resize": 0}, "upscaling_resize"),
        ({"upscaling_resize": 17}, "upscaling_resize"),
        ({"resize_mode": 1, "upscaling_resize_w": 8000, "upscaling_resize_h": 8000}, "upscaling_resize_w"),
        ({"resize_mode": 2}, "resize_mode"),
        ({"image": "AAAA"}, "image"),
    ],
)
def test_extras_bad_fields_are_422(client: httpx.Client, generated: str, body: dict, field: str) -> None:  # type: ignore[type-arg]
    r = client.post("/sdapi/v1/extra-single-image", json={"image": generated, **body})
    assert r.status_code == 422 and r.json()["field"] == field, r.text[:300]
    if field == "upscaler_1":
        assert "None, Lanczos, Nearest" in r.json()["detail"]


def test_openapi_describes_every_route(app, client: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    from knsd.serve.http.openapi import _walk

    registered = list(_walk(list(app.routes)))
    assert len(registered) >= 35
    undocumented = []
    for path, method, _ in registered:
        op = spec["paths"][path][method.lower()]  # every registered route appears
        if op.get("x-knsd-undocumented") or "200" not in op["responses"]:
            undocumented.append(f"{method} {path}")
    assert not undocumented, f"describe these routes with @doc (knsd/serve/openapi.py): {undocumented}"
    jsonschema.Draft202012Validator.check_schema(
        spec["paths"]["/sdapi/v1/txt2img"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )


def test_responses_match_their_documented_schemas(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or "{" in path or path in ("/docs", "/metrics", "/"):
            continue  # pages and Prometheus text, not JSON
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        r = client.get(path)
        assert r.status_code == 200, path
        jsonschema.validate(r.json(), schema, cls=jsonschema.Draft202012Validator)
        checked += 1
    assert checked >= 20


def test_docs_page_works_offline(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    js = client.get("/docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 500_000 and "javascript" in js.headers["content-type"]
    assert client.get("/docs/swagger-ui.css").status_code == 200
    assert "Apache License" in client.get("/docs/LICENSE").text
    assert client.get("/docs/..%2Fpnginfo.py").status_code == 404
    assert client.get("/docs/../serve/app.py").status_code == 404


def test_auth_still_applies_to_new_routes(client: httpx.Client) -> None:
    r = httpx.get(str(client.base_url) + "/sdapi/v1/memory")
    assert r.status_code == 401
    assert json.loads(r.text)["detail"] == "Not authenticated"


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/png-info", "/v1/images/generations"])
def test_lone_surrogate_is_400_not_500(client: httpx.Client, path: str) -> None:
    # Found by tests/test_fuzz.py: "\ud800" decodes to a str nothing downstream can encode.
    r = client.post(path, content=b'{"prompt": "a\\ud800", "image": "\\udfff"}')
    assert r.status_code == 400 and "surrogate" in r.json()["detail"], r.text[:300]
    ok = client.post("/sdapi/v1/png-info", content=b'{"image": "\\ud83d\\ude00"}')  # a valid pair: an emoji
    assert ok.status_code == 422 and ok.json()["field"] == "image"


def test_skip_ends_the_current_batch_only(client: httpx.Client) -> None:
    body = {**SMALL, "prompt": "skip me", "steps": 60, "width": 96, "height": 96, "seed": 11, "n_iter": 2}
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(
        target=lambda: result.update(r=client.post("/sdapi/v1/txt2img", json=body, timeout=300))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get("/sdapi/v1/progress").json()["state"]
        if state["job_count"] == 2 and state["job_no"] == 0 and state["sampling_step"] >= 1:
            break
        time.sleep(0.01)
    assert client.post("/sdapi/v1/skip").text == "null"
    worker.join(300)
    assert result["r"].status_code == 200, result["r"].text[:300]
    images = result["r"].json()["images"]
    assert len(images) == 2  # the second batch still ran
    full = client.post("/sdapi/v1/txt2img", json={**body, "n_iter": 1}, timeout=300).json()["images"][0]
    second = client.post("/sdapi/v1/txt2img", json={**body, "n_iter": 1, "seed": 12}, timeout=300)
    second = second.json()["images"][0]
    assert _image(images[0]).tobytes() != _image(full).tobytes()  # the first batch stopped early
    assert _image(images[1]).tobytes() == _image(second).tobytes()  # the second ran in full
