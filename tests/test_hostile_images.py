"""Hostile images and add-on floods against a real `knsd serve --model tiny` process: input images are held
to their pixel budgets from the header (before decoding), only PNG, JPEG and WebP are read, unknown add-on
names rescan a folder at most once per interval, while a concurrent client sees `/healthz` answer within
1 s and the server's memory comes back within 300 MB of where it started."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import served as serve_process
from tests.hostile import health_watched, png_bomb, rss_bytes

JSON = {"Content-Type": "application/json"}
IMAGE_PIXELS = 512 * 512
REQUEST_PIXELS = 600_000
MAX_IMAGES = 4
UNKNOWN_NAMES = 10
VOLUME_FILES = 3001


@pytest.fixture(scope="module")
def served(
    cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    root = tmp_path_factory.mktemp("hostile-images")
    loras = root / "Lora"
    loras.mkdir()
    header = json.dumps({"__metadata__": {"ss_output_name": "x"}}).encode()
    for i in range(VOLUME_FILES):  # a crowded volume: each scan reads every file's header
        (loras / f"style-{i:04d}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    limits = ["--max-image-pixels", str(IMAGE_PIXELS), "--max-request-pixels", str(REQUEST_PIXELS)]
    args = (*limits, "--max-images", str(MAX_IMAGES), "--lora-dir", str(loras))
    with serve_process(cache, *args, log=root / "serve.log") as started:
        yield started


@pytest.fixture
def server(served: tuple[subprocess.Popen[bytes], str]) -> str:
    return served[1]


def post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(url + path, content=json.dumps(body), headers=JSON, timeout=120)


def encoded(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def png(width: int, height: int) -> str:
    return encoded(Image.new("RGB", (width, height), (90, 120, 200)))


def img2img(image: str) -> dict[str, object]:
    return {"prompt": "x", "width": 64, "height": 64, "steps": 2, "init_images": [image]}


def refused(r: httpx.Response, field: str, flag: str | None = None) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    body = r.json()
    assert body["field"] == field, body
    if flag is not None:
        assert flag in body["detail"], body


def test_decompression_bombs_are_422s_before_decoding(server: str) -> None:
    with health_watched(server):
        # Past Pillow's own bomb limit (a 500 before: DecompressionBombError), and a truncated file with it.
        refused(post(server, "/sdapi/v1/img2img", img2img(png_bomb(20000, 20000, rows=2))), "init_images[0]")
        # Under Pillow's limit but past the server's: 64 MP from a few dozen KB, refused by its header.
        bomb = png_bomb(8000, 8000)
        assert len(bomb) < 200_000
        refused(post(server, "/sdapi/v1/img2img", img2img(bomb)), "init_images[0]", "--max-image-pixels")
        refused(post(server, "/sdapi/v1/png-info", {"image": bomb}), "image", "--max-image-pixels")
        items = [{"data": bomb, "name": f"b{i}"} for i in range(MAX_IMAGES)]
        refused(post(server, "/sdapi/v1/extra-batch-images", {"imageList": items}), "imageList[0].data")
        detect = {"controlnet_module": "canny", "controlnet_input_images": [bomb]}
        refused(
            post(server, "/controlnet/detect", detect), "controlnet_input_images[0]", "--max-image-pixels"
        )
        # The same shape within the budget is read.
        assert post(server, "/sdapi/v1/img2img", img2img(png_bomb(256, 256))).status_code == 200


def test_only_png_jpeg_and_webp_are_read(server: str) -> None:
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    with health_watched(server):
        for fmt in ("GIF", "BMP", "TIFF", "ICO"):
            r = post(server, "/sdapi/v1/img2img", img2img(encoded(image, fmt)))
            refused(r, "init_images[0]")
            assert "PNG, JPEG or WebP" in r.json()["detail"], fmt
        for fmt in ("PNG", "JPEG", "WEBP"):
            r = post(server, "/sdapi/v1/img2img", img2img(encoded(image, fmt)))
            assert r.status_code == 200, (fmt, r.text[:300])


def test_images_per_request_are_counted(server: str) -> None:
    with health_watched(server):
        items = [{"data": png(64, 64), "name": f"i{i}"} for i in range(MAX_IMAGES + 1)]
        r = post(server, "/sdapi/v1/extra-batch-images", {"imageList": items, "upscaler_1": "None"})
        refused(r, f"imageList[{MAX_IMAGES}].data", "--max-images")
        r = post(
            server, "/sdapi/v1/extra-batch-images", {"imageList": items[:MAX_IMAGES], "upscaler_1": "None"}
        )
        assert r.status_code == 200 and len(r.json()["images"]) == MAX_IMAGES


def test_a_requests_images_share_one_pixel_budget(server: str) -> None:
    side = 400  # 160,000 pixels each: three fit in 600,000, the fourth does not
    items = [{"data": png(side, side + i), "name": f"i{i}"} for i in range(4)]
    with health_watched(server):
        r = post(server, "/sdapi/v1/extra-batch-images", {"imageList": items, "upscaler_1": "None"})
        refused(r, "imageList[3].data", "--max-request-pixels")
        r = post(server, "/sdapi/v1/extra-batch-images", {"imageList": items[:3], "upscaler_1": "None"})
        assert r.status_code == 200


def test_a_script_decodes_its_init_image_once(server: str) -> None:
    # Prompts from file: six generations share the request's one init image, within --max-images 4.
    body = {
        **img2img(png(64, 64)),
        "script_name": "prompts from file or textbox",
        "script_args": [False, False, "start", "\n".join(f"p{i}" for i in range(6))],
    }
    r = post(server, "/sdapi/v1/img2img", body)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["images"]) == 6


def test_png_info_text_bombs_leave_the_loop_free(server: str) -> None:
    image = Image.new("RGB", (8, 8))
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", "(a " * 20000 + "\nSteps: 20, Sampler: Euler, CFG scale: 7", zip=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    assert len(buffer.getvalue()) < 2000
    with health_watched(server):
        r = post(server, "/sdapi/v1/png-info", {"image": base64.b64encode(buffer.getvalue()).decode()})
        assert r.status_code == 200 and r.json()["parameters"]["Steps"] == "20"


def test_unknown_add_on_names_do_not_rescan_per_request(server: str) -> None:
    with health_watched(server):
        for i in range(UNKNOWN_NAMES):
            r = post(server, "/sdapi/v1/txt2img", {"prompt": f"x <lora:missing-{i}:1>", "steps": 1})
            refused(r, "prompt")
        # A file copied onto the volume is still found, by the next request after the interval at most.
        assert httpx.post(server + "/sdapi/v1/refresh-loras", timeout=60).status_code == 200
        names = [item["name"] for item in httpx.get(server + "/sdapi/v1/loras", timeout=60).json()]
        assert len(names) == VOLUME_FILES


def test_hostile_shapes_give_their_memory_back(served: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, url = served
    assert post(url, "/sdapi/v1/img2img", img2img(png(64, 64))).status_code == 200  # warm: lazy imports
    before = rss_bytes(proc.pid)
    bomb = png_bomb(8000, 8000)
    big = png(500, 500)
    with health_watched(url):
        for i in range(12):
            refused(post(url, "/sdapi/v1/txt2img", {"prompt": f"{i} " + "a" * 1_000_000}), "prompt")
            refused(post(url, "/sdapi/v1/img2img", img2img(bomb)), "init_images[0]")
            items = [{"data": big, "name": f"b{j}"} for j in range(MAX_IMAGES + 1)]
            refused(post(url, "/sdapi/v1/extra-batch-images", {"imageList": items}), "imageList[2].data")
            assert post(url, "/sdapi/v1/png-info", {"image": big}).status_code == 200
            # Distinct long prompts, served: their schedules are cached within a byte bound.
            long = {"prompt": f"[{i}:b:0.5] " + "word " * 600, "width": 64, "height": 64, "steps": 2}
            assert post(url, "/sdapi/v1/txt2img", long).status_code == 200
    grown = rss_bytes(proc.pid) - before
    assert grown < 300 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MB"
