"""Request validation: A1111's defaults, and a 422 naming the field, the range and the value."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from knsd.errors import BadRequest, InvalidField
from knsd.serve.api.openai import parse_openai
from knsd.serve.api.request import parse_img2img, parse_txt2img

BUDGET = 1536 * 1536


def test_a1111_api_defaults() -> None:
    req = parse_txt2img({"prompt": "pretty dog", "unknown": 1}, BUDGET)
    assert (req.steps, req.cfg_scale, req.width, req.height) == (50, 7.0, 512, 512)
    assert (req.batch_size, req.n_iter, req.negative_prompt, req.sampler.sampler) == (1, 1, "", "Euler")
    assert 0 <= req.seed < 4294967294


def test_nulls_mean_defaults_and_integral_floats_pass() -> None:
    req = parse_txt2img({"prompt": None, "steps": None, "width": 256.0, "seed": 7}, BUDGET)
    assert (req.prompt, req.steps, req.width, req.seed) == ("", 50, 256, 7)


def test_seeds_follow_a1111() -> None:
    req = parse_txt2img({"seed": 100, "batch_size": 2, "n_iter": 3}, BUDGET)
    assert req.seeds == [100, 101, 102, 103, 104, 105]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"width": 500}, "width", "multiple of 8 between 64 and 2048, got 500"),
        ({"height": 4096}, "height", "got 4096"),
        ({"width": 56}, "width", "got 56"),
        ({"steps": 0}, "steps", "between 1 and 150, got 0"),
        ({"steps": 151}, "steps", "got 151"),
        ({"steps": "20"}, "steps", "got '20'"),
        ({"steps": True}, "steps", "got True"),
        ({"cfg_scale": 31}, "cfg_scale", "between 0 and 30"),
        ({"cfg_scale": float("nan")}, "cfg_scale", "between 0 and 30"),
        ({"batch_size": 9}, "batch_size", "between 1 and 8, got 9"),
        ({"n_iter": 0}, "n_iter", "between 1 and 8, got 0"),
        ({"seed": -2}, "seed", "got -2"),
        ({"prompt": 5}, "prompt", "a string"),
        ({"sampler_name": "nope"}, "sampler_name", "Euler a"),
        ({"width": 2048, "height": 2048}, "width", "pixel budget"),
        ({"send_images": "yes"}, "send_images", "true or false"),
    ],
)
def test_out_of_range_names_the_field(body: dict, field: str, fragment: str) -> None:
    with pytest.raises(InvalidField) as err:
        parse_txt2img(body, BUDGET)
    assert err.value.field == field
    assert err.value.status == 422
    assert fragment in err.value.message


def test_body_must_be_an_object() -> None:
    with pytest.raises(BadRequest) as err:
        parse_txt2img([1, 2], BUDGET)  # type: ignore[arg-type]
    assert err.value.status == 400


def _png(size: tuple[int, int] = (80, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_decodes_and_resizes() -> None:
    req = parse_img2img(
        {"init_images": ["data:image/png;base64," + _png()], "width": 64, "height": 64}, BUDGET
    )
    assert req.init_image.size == (64, 64)
    assert req.denoising_strength == 0.75


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "init_images"),
        ({"init_images": []}, "init_images"),
        ({"init_images": ["%%%not base64"]}, "init_images[0]"),
        ({"init_images": [base64.b64encode(b"plain text, not an image").decode()]}, "init_images[0]"),
        ({"init_images": ["PLACEHOLDER"], "denoising_strength": 1.5}, "denoising_strength"),
        ({"init_images": ["PLACEHOLDER"], "denoising_strength": 0.001, "steps": 20}, "denoising_strength"),
        ({"init_images": ["PLACEHOLDER"], "resize_mode": 3}, "resize_mode"),
    ],
)
def test_img2img_errors(body: dict, field: str) -> None:
    if body.get("init_images") == ["PLACEHOLDER"]:
        body["init_images"] = [_png()]
    with pytest.raises(InvalidField) as err:
        parse_img2img(body, BUDGET)
    assert err.value.field == field


def test_openai_body() -> None:
    req, fmt = parse_openai({"prompt": "cat", "n": 2, "size": "256x128", "seed": 5}, BUDGET)
    assert (req.width, req.height, req.batch_size, req.seeds, fmt) == (256, 128, 2, [5, 6], "b64_json")
    for body, field in [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "500x512"}, "size"),
        ({"prompt": "x", "n": 20}, "n"),
        ({"prompt": "x", "response_format": "url"}, "response_format"),
    ]:
        with pytest.raises(InvalidField) as err:
            parse_openai(body, BUDGET)
        assert err.value.field == field
