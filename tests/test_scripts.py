"""A1111's scripts over real HTTP: `sd upscale` (A1111's argument order, tiles, seeds, blending), the script
listings in A1111's shapes, and refusals by name."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.api.grids import combine, split, tile_grid
from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 2, "seed": 9, "denoising_strength": 0.5}


@pytest.fixture(scope="module")
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _init() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _steps_run(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(re.search(r"^knsd_denoising_step_seconds_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_tile_geometry_is_a1111s_split_grid() -> None:
    grid = tile_grid(128, 128, 64, 64, 8)  # A1111's test: 64x64 Lanczos x2, tiles 64, overlap 8
    assert [t.x for t in grid.rows[0]] == [0, 32, 64] and [row[0].y for row in grid.rows] == [0, 32, 64]
    assert grid.count == 9
    assert tile_grid(200, 64, 64, 64, 16).rows[0][-1].x == 136  # the last tile is pulled back to the edge


def test_tiles_blend_linearly_across_the_overlap() -> None:
    grid = tile_grid(96, 64, 64, 64, 32)
    left, right = Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64), (255, 255, 255))
    row = np.asarray(combine([left, right], grid))[10, :, 0].astype(int)
    assert row[:32].max() == 0 and row[64:].min() == 255
    assert list(row[32:64]) == [int(i * 255 / 32) for i in range(32)]  # A1111's ramp mask
    image = Image.fromarray(np.arange(96 * 64 * 3, dtype=np.uint32).reshape(64, 96, 3).astype(np.uint8))
    assert np.array_equal(np.asarray(combine(split(image, grid), grid)), np.asarray(image))


def test_sd_upscale_with_a1111s_test_arguments(url: str) -> None:
    """A1111's test/test_img2img.py::test_img2img_sd_upscale_performed arguments: Lanczos x2, overlap 8."""
    before = _steps_run(url)
    body = {
        **SMALL,
        "init_images": [_b64(_init())],
        "script_name": "sd upscale",
        "script_args": ["", 8, "Lanczos", 2.0],
    }
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
    assert r.status_code == 200, r.text
    [out] = r.json()["images"]
    assert _image(out).size == (128, 128)
    # 9 tiles, each an img2img of int(steps x strength) = 1 step
    assert _steps_run(url) - before == 9
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in text and "Size: 64x64" in text


def test_sd_upscale_tiles_are_img2img_runs_with_consecutive_seeds(url: str) -> None:
    """Without overlap each tile of the result is exactly the img2img of that tile of the upscaled image,
    tile k with seed + k."""
    init = _init()
    body = {**SMALL, "init_images": [_b64(init)], "script_name": "SD Upscale", "script_args": ["", 0, 2, 2]}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
    assert r.status_code == 200, r.text
    result = np.asarray(_image(r.json()["images"][0]).convert("RGB"))
    upscaled = init.resize((128, 128), Image.Resampling.NEAREST)  # upscaler index 2 = Nearest
    for k, (x, y) in enumerate([(0, 0), (64, 0), (0, 64), (64, 64)]):
        tile = upscaled.crop((x, y, x + 64, y + 64))
        alone = httpx.post(
            url + "/sdapi/v1/img2img",
            json={**SMALL, "init_images": [_b64(tile)], "seed": SMALL["seed"] + k},
            timeout=120,
        )
        expected = np.asarray(_image(alone.json()["images"][0]).convert("RGB"))
        assert np.array_equal(result[y : y + 64, x : x + 64], expected), k


def test_script_listings_have_a1111s_shapes(url: str) -> None:
    scripts = httpx.get(url + "/sdapi/v1/scripts").json()
    assert "sd upscale" in scripts["img2img"] and "sd upscale" not in scripts["txt2img"]
    assert "prompt matrix" in scripts["txt2img"] and "prompts from file or textbox" in scripts["img2img"]
    infos = httpx.get(url + "/sdapi/v1/script-info").json()
    [entry] = [e for e in infos if e["name"] == "sd upscale"]
    assert entry["is_img2img"] is True and entry["is_alwayson"] is False
    assert [a["label"] for a in entry["args"]] == ["", "Tile overlap", "Upscaler", "Scale Factor"]
    assert all(set(a) == {"label", "value", "minimum", "maximum", "step", "choices"} for a in entry["args"])
    names = [u["name"] for u in httpx.get(url + "/sdapi/v1/upscalers").json()]
    assert entry["args"][2]["choices"] == names


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"script_name": "loopback"}, "script_name"),
        ({"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0, 1]}, "script_args"),
        ({"script_name": "sd upscale", "script_args": ["", 8, "R-ESRGAN 4x+", 2.0]}, "script_args[2]"),
        ({"script_name": "sd upscale", "script_args": ["", 64, "Lanczos", 2.0]}, "script_args[1]"),
        ({"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 64]}, "script_args[3]"),
    ],
)
def test_script_refusals_name_the_argument(url: str, fields: dict[str, Any], field: str) -> None:
    body = {**SMALL, "init_images": [_b64(_init())], **fields}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "script_name": "sd upscale"}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "script_name"  # an img2img script


def _post(url: str, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + f"/sdapi/v1/{route}", json=body, timeout=300)


def test_prompt_matrix_makes_every_combination_and_a_labelled_grid(url: str) -> None:
    body = {**SMALL, "prompt": "a cat|red|blue", "script_name": "prompt matrix", "script_args": [False, True]}
    r = _post(url, "txt2img", body)
    assert r.status_code == 200, r.text
    data = json.loads(r.json()["info"])
    assert data["all_prompts"] == ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert data["all_seeds"] == [9, 10, 11, 12]  # "Use different seed for each picture"
    assert data["index_of_first_image"] == 1 and len(r.json()["images"]) == 5
    assert data["infotexts"][0] == data["infotexts"][1] and data["infotexts"][4].startswith(
        "a cat, red, blue\n"
    )
    grid = _image(r.json()["images"][0])
    # 2 x 2 cells of 64 (rows = 1 << ((3 parts - 1) // 2)), row labels 3/4 of a cell wide, column labels above
    assert grid.width == 128 + 48 and grid.height > 128
    # each cell is exactly the lone generation of its prompt and seed
    alone = _post(url, "txt2img", {**SMALL, "prompt": "a cat, blue", "seed": 11})
    assert r.json()["images"][3] == alone.json()["images"][0]


def test_prompt_matrix_on_the_negative_prompt_with_spaces_at_start(url: str) -> None:
    body = {
        **SMALL,
        "negative_prompt": "ugly|blurry",
        "script_name": "prompt matrix",
        "script_args": [True, False, "negative", "space", 4],
    }
    r = _post(url, "txt2img", body)
    data = json.loads(r.json()["info"])
    assert data["all_negative_prompts"] == ["ugly", "blurry ugly"] and data["all_seeds"] == [9, 9]


def test_prompts_from_file_lines_and_their_tags(url: str) -> None:
    lines = "red\n\n--prompt blue sky --steps 3 --seed 5 --outpath_samples /x\n--made_up 1\n"
    body = {**SMALL, "prompt": "a cat", "script_name": "prompts from file or textbox"}
    r = _post(url, "txt2img", {**body, "script_args": [False, False, "end", lines]})
    assert r.status_code == 200, r.text
    data = json.loads(r.json()["info"])
    # a line with an unknown tag is a prompt as a whole, as in A1111
    assert data["all_prompts"] == ["a cat red", "a cat blue sky", "a cat --made_up 1"]
    assert data["all_seeds"] == [9, 5, 9] and "Steps: 3, " in data["infotexts"][1]
    r = _post(url, "txt2img", {**body, "script_args": [True, False, "start", "red\nblue"]})
    data = json.loads(r.json()["info"])
    assert data["all_prompts"] == ["red a cat", "blue a cat"] and data["all_seeds"] == [9, 10]  # iterate seed


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"script_name": "prompt matrix", "prompt": "a|b|c|d|e|f|g|h", "script_args": []}, "script_args"),
        ({"script_name": "prompt matrix", "script_args": [False, False, "both"]}, "script_args[2]"),
        (
            {
                "script_name": "prompts from file or textbox",
                "script_args": [False, False, "end", "--sd_model x.ckpt --prompt a"],
            },
            "script_args[3] line 1",
        ),
        (
            {
                "script_name": "prompts from file or textbox",
                "script_args": [False, False, "end", "--styles s --prompt a"],
            },
            "script_args[3] line 1",
        ),
        (
            {
                "script_name": "prompts from file or textbox",
                "script_args": [False, False, "end", "--steps 900"],
            },
            "steps",
        ),
    ],
)
def test_prompt_script_refusals(url: str, fields: dict[str, Any], field: str) -> None:
    r = _post(url, "txt2img", {**SMALL, **fields})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def _xyz_args(**given: Any) -> list[Any]:
    args: list[Any] = [
        1,
        "",
        None,
        0,
        "",
        None,
        0,
        "",
        None,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        0,
        False,
    ]
    names = [
        "x_type",
        "x_values",
        "x_dropdown",
        "y_type",
        "y_values",
        "y_dropdown",
        "z_type",
        "z_values",
        "z_dropdown",
    ]
    names += [
        "legend",
        "lone",
        "sub_grids",
        "keep_random",
        "vary_x",
        "vary_y",
        "vary_z",
        "margin",
        "csv_mode",
    ]
    for key, value in given.items():
        args[names.index(key)] = value
    return args


def test_xyz_plot_grid_size_and_per_cell_infotext(url: str) -> None:
    args = _xyz_args(x_type=4, x_values="1-3", y_type=6, y_values="3, 7", lone=True)  # Steps x CFG Scale
    r = _post(url, "txt2img", {**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    data = json.loads(r.json()["info"])
    assert len(images) == 1 + 6
    grid = _image(images[0])
    assert grid.width == 3 * 64 + 48 and grid.height > 2 * 64  # 3 columns, 2 rows, labels left and above
    assert (
        'Script: X/Y/Z plot, X Type: Steps, X Values: 1-3, Y Type: CFG Scale, Y Values: "3, 7"'
        in data["infotexts"][0]
    )
    cells = data["infotexts"][1:]
    assert [
        f"Steps: {s}," in t and f"CFG scale: {c:.1f}," in t
        for t, (c, s) in zip(cells, [(3, 1), (3, 2), (3, 3), (7, 1), (7, 2), (7, 3)], strict=True)
    ] == [True] * 6
    alone = _post(url, "txt2img", {**SMALL, "steps": 2, "cfg_scale": 7})
    assert images[5] == alone.json()["images"][0]  # cell (x=2, y=7) is that lone generation


def test_xyz_plot_sampler_dropdown_and_fixed_seeds(url: str) -> None:
    args = _xyz_args(
        x_type=9, x_dropdown=["Euler", "DDIM"], y_type=1, y_values="-1, 5", lone=True, legend=False
    )
    r = _post(url, "txt2img", {**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    data = json.loads(r.json()["info"])
    assert _image(r.json()["images"][0]).size == (128, 128)  # no legend: the bare 2 x 2 grid
    assert "Sampler: DDIM" in data["infotexts"][2] and "Seed: 5," in data["infotexts"][3]
    fixed = re.search(r"Fixed Y Values: \"(\d+), 5\"", data["infotexts"][0])
    assert fixed is not None and data["all_seeds"][:2] == [int(fixed.group(1))] * 2


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"x_type": 11, "x_values": "a"}, "script_args[0]"),  # Checkpoint name: one model per pod
        ({"x_type": 99}, "script_args[0]"),
        ({"x_type": 4, "x_values": "1-200"}, "script_args[1]"),
        ({"x_type": 4, "x_values": "1-8", "y_type": 4, "y_values": "1-9"}, "script_args"),
        ({"x_type": 4, "x_values": "1, two"}, "script_args[1]"),
    ],
)
def test_xyz_refusals(url: str, given: dict[str, Any], field: str) -> None:
    r = _post(url, "txt2img", {**SMALL, "script_name": "x/y/z plot", "script_args": _xyz_args(**given)})
    assert r.status_code == 422 and r.json()["field"] == field, r.text
