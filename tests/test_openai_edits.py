"""OpenAI's `images.edit` with OpenAI's own Python client against a real `knsd serve` process."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.helpers import start_serve, wait_for
from tests.test_inpaint import change, picture

STEPS = {"steps": 3, "seed": 21}


@pytest.fixture(scope="module")
def base_url(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("edits") / "serve.log"
    proc, url = start_serve(cache, "--model", "tiny", "--no-warmup", "--max-body-mb", "1", log=log)
    try:
        wait_for(url + "/readyz", 180)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def openai_mask(box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> np.ndarray:
    """OpenAI's convention: opaque where to keep, fully transparent where to edit."""
    mask = np.zeros((64, 64, 4), np.uint8)
    mask[..., 3] = 255
    left, top, right, bottom = box
    mask[top:bottom, left:right, 3] = 0
    return mask


def decoded(item: object) -> np.ndarray:
    data = base64.b64decode(item.b64_json)  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _far_from(box: tuple[int, int, int, int], reach: int = 11) -> np.ndarray:
    far = np.ones((64, 64), bool)
    left, top, right, bottom = box
    far[max(top - reach, 0) : bottom + reach, max(left - reach, 0) : right + reach] = False
    return far


def test_edit_changes_the_transparent_area_of_the_mask(client: openai.OpenAI) -> None:
    original = picture()
    result = client.images.edit(
        image=("photo.png", png(original)),
        mask=("mask.png", png(openai_mask())),
        prompt="a red door",
        n=2,
        size="64x64",
        extra_body=STEPS,
    )
    assert len(result.data) == 2
    assert [item.model_extra["seed"] for item in result.data] == [21, 22]  # type: ignore[index]
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True
    for item in result.data:
        diff = change(decoded(item), original)
        assert diff[inside].mean() > 20
        assert (
            diff[_far_from((16, 16, 48, 48))] == 0
        ).all()  # beyond A1111's 4-pixel mask blur: the original


def test_without_a_mask_the_image_transparency_is_the_mask(client: openai.OpenAI) -> None:
    image = np.dstack([picture(), np.full((64, 64), 255, np.uint8)])
    image[40:, 40:, 3] = 0  # a transparent corner to paint
    result = client.images.edit(image=("photo.png", png(image)), prompt="a cat", extra_body=STEPS)
    out = decoded(result.data[0])
    assert out.shape == (64, 64, 3)  # size "auto": the image's
    assert (out[_far_from((40, 40, 64, 64))] == picture()[_far_from((40, 40, 64, 64))]).all()
    assert change(out, picture())[44:, 44:].mean() > 20


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"mask": ("m.png", png(picture()))}, "mask"),  # no alpha: nothing says where to edit
        ({"mask": ("m.png", png(np.zeros((32, 32, 4), np.uint8)))}, "mask"),  # not the image's size
        ({"image": [("a.png", png(picture())), ("b.png", png(picture()))]}, "image"),
        ({"size": "65x64"}, "size"),
        ({"n": 9}, "n"),
        ({"response_format": "url"}, "response_format"),
        ({"output_format": "webp"}, "output_format"),
        ({"extra_body": {"guidance": 3}}, "guidance"),
    ],
)
def test_edits_knsd_cannot_serve_are_refused_by_name(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    call = {
        "image": ("photo.png", png(picture())),
        "mask": ("m.png", png(openai_mask())),
        "prompt": "x",
        **kwargs,
    }
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.images.edit(**call)
    assert caught.value.response.json()["field"] == param


def test_streamed_edit_sends_image_edit_events(client: openai.OpenAI) -> None:
    stream = client.images.edit(
        image=("photo.png", png(picture())),
        mask=("mask.png", png(openai_mask())),
        prompt="a red door",
        stream=True,
        partial_images=1,
        extra_body=STEPS,
    )
    kinds = [event.type for event in stream]
    assert kinds == ["image_edit.partial_image", "image_edit.completed"]


def test_multipart_bodies_are_bounded_and_must_be_multipart(base_url: str) -> None:
    big = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)  # ~1.5 MB as PNG
    files = {"image": ("big.png", png(big), "image/png")}
    r = httpx.post(base_url + "/v1/images/edits", data={"prompt": "x"}, files=files, timeout=60)
    assert r.status_code == 413
    r = httpx.post(base_url + "/v1/images/edits", json={"prompt": "x"}, timeout=60)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
