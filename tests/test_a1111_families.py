"""A1111 prompt handling on the SDXL and SD 3.x tiny models: two CLIP towers, and refusals where knsd
leaves the encoding to diffusers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from knsd.errors import InvalidField
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from knsd.serve.prompts.conditioning import PromptOptions, encode_texts

BUDGET = 1 << 30


@pytest.fixture(scope="module")
def sdxl(cache: Path) -> Iterator[Any]:
    from knsd.serve.models.loader import load_model

    yield load_model("tiny-sdxl", cache, device="cpu")


@pytest.fixture(scope="module")
def sd3(cache: Path) -> Iterator[Any]:
    from knsd.serve.models.loader import load_model

    yield load_model("tiny-sd3", cache, device="cpu")


def test_sdxl_plain_prompt_matches_diffusers(sdxl: Any) -> None:
    engine = Engine(sdxl)
    towers = engine.towers()
    assert towers is not None and len(towers) == 2
    ours = encode_texts(towers, ["a red cat"], PromptOptions())
    theirs, _, pooled, _ = sdxl.txt2img.encode_prompt(
        "a red cat", device="cpu", do_classifier_free_guidance=False
    )
    assert ours.hidden.shape == theirs.shape
    assert torch.allclose(ours.hidden, theirs, atol=1e-5)
    assert torch.allclose(ours.pooled, pooled, atol=1e-5)


def test_sdxl_generates_with_emphasis_long_prompts_and_hires(sdxl: Any) -> None:
    engine = Engine(sdxl)
    body = {
        "prompt": "a (red:1.3) cat BREAK [dog:cat:1], " + "word " * 30,
        "negative_prompt": "blurry",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 1,
        "enable_hr": True,
        "hr_scale": 1.5,
        "denoising_strength": 0.5,
    }
    [image] = engine.generate(parse_txt2img(body, BUDGET)).images
    assert image.size == (96, 96)


def test_sd3_refuses_syntax_it_would_read_as_text(sd3: Any) -> None:
    engine = Engine(sd3)
    assert engine.towers() is None
    base = {"steps": 2, "width": 64, "height": 64, "seed": 1}
    for body, field in [
        ({"prompt": "a (red:1.3) cat"}, "prompt"),
        ({"prompt": "[cat:dog:1]"}, "prompt"),
        ({"prompt": "cat", "negative_prompt": "a BREAK b"}, "negative_prompt"),
        ({"prompt": "word " * 30}, "prompt"),
        (
            {"prompt": "cat", "override_settings": {"CLIP_stop_at_last_layers": 2}},
            "override_settings.CLIP_stop_at_last_layers",
        ),
    ]:
        with pytest.raises(InvalidField) as err:
            engine.generate(parse_txt2img({**base, **body}, BUDGET))
        assert err.value.field == field
    body = {
        **base,
        "prompt": "plain cat",
        "enable_hr": True,
        "hr_upscaler": "Lanczos",
        "denoising_strength": 0.5,
    }
    [image] = engine.generate(parse_txt2img({**body, "subseed_strength": 0.3}, BUDGET)).images
    assert image.size == (128, 128)
