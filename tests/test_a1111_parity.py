"""A1111 parity on the real tiny pipeline: hires fix, variation seeds, schedules, clip skip, infotext."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from knsd.errors import InvalidField
from knsd.serve.api.infotext import ModelInfo, info, infotext
from knsd.serve.api.request import parse_img2img, parse_txt2img
from knsd.serve.api.scripts import parse_script
from knsd.serve.generate.engine import Engine

BASE = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 3, "seed": 11}
BUDGET = 1 << 30


@pytest.fixture(scope="module")
def engine(tiny_model: Any) -> Engine:
    return Engine(tiny_model)


def _run(engine: Engine, **fields: Any) -> np.ndarray:
    [image] = engine.generate(parse_txt2img({**BASE, **fields}, BUDGET)).images
    return np.asarray(image, dtype=np.int16)


def test_hires_fix_doubles_the_size_and_writes_its_infotext(engine: Engine) -> None:
    req = parse_txt2img({**BASE, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}, BUDGET)
    [image] = engine.generate(req).images
    assert image.size == (128, 128)
    text = infotext(req, req.seed, ModelInfo("tiny", "abc"))
    assert "Size: 64x64" in text and "Denoising strength: 0.5" in text and "Hires upscale: 2.0" in text
    assert "Hires upscaler" not in text  # hr_upscaler was null
    assert info(req, ModelInfo("tiny", "abc"))["extra_generation_params"]["Hires upscale"] == 2.0


@pytest.mark.parametrize("upscaler", ["Latent (bicubic antialiased)", "Lanczos", "Nearest", "None"])
def test_hires_upscalers(engine: Engine, upscaler: str) -> None:
    body = {**BASE, "enable_hr": True, "hr_upscaler": upscaler, "hr_resize_x": 96, "hr_resize_y": 80}
    req = parse_txt2img(body, BUDGET)
    [image] = engine.generate(req).images
    # cover 96x80 from 64x64 (96x96), then crop in latent space to 96x80
    assert image.size == (96, 80)
    assert f"Hires upscaler: {upscaler}" in infotext(req, 1, ModelInfo("t", "h"))
    assert "Hires resize: 96x80" in infotext(req, 1, ModelInfo("t", "h"))


def test_hires_with_denoising_strength_0_only_upscales(engine: Engine) -> None:
    """A1111 runs 0 second-pass steps: the upscaled first pass, whatever the hires sampler or steps."""
    body = {**BASE, "enable_hr": True, "denoising_strength": 0}
    [a] = engine.generate(parse_txt2img(body, BUDGET)).images
    [b] = engine.generate(
        parse_txt2img({**body, "hr_sampler_name": "DDIM", "hr_second_pass_steps": 7}, BUDGET)
    ).images
    assert a.size == (128, 128) and np.array_equal(np.asarray(a), np.asarray(b))
    [c] = engine.generate(parse_txt2img({**body, "denoising_strength": 0.5}, BUDGET)).images
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_hires_refusals() -> None:
    for body, field in [
        ({"hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
        ({"hr_scale": 64}, "hr_scale"),
        ({"hr_sampler_name": "nope"}, "hr_sampler_name"),
        ({"denoising_strength": 1.5}, "denoising_strength"),
    ]:
        with pytest.raises(InvalidField) as err:
            parse_txt2img({**BASE, "enable_hr": True, **body}, BUDGET)
        assert err.value.field == field
    with pytest.raises(InvalidField) as err:
        parse_txt2img({**BASE, "enable_hr": True, "hr_upscaler": "ESRGAN_4x"}, BUDGET)
    assert "Lanczos" in err.value.message and "Latent (nearest-exact)" in err.value.message


def test_variation_seeds_interpolate_between_seed_and_subseed(engine: Engine) -> None:
    base = _run(engine)
    assert np.array_equal(_run(engine, subseed=99, subseed_strength=0), base)
    # strength 1 is the subseed's noise (Euler draws nothing after the first noise)
    assert np.array_equal(_run(engine, subseed=99, subseed_strength=1.0), _run(engine, seed=99))
    half = _run(engine, subseed=99, subseed_strength=0.5)
    assert not np.array_equal(half, base)
    req = parse_txt2img({**BASE, "subseed": 99, "subseed_strength": 0.5, "batch_size": 2}, BUDGET)
    assert req.seeds == [11, 11] and req.subseeds == [99, 100]
    text = infotext(req, 11, ModelInfo("t", "h"), 100)
    assert "Variation seed: 100, Variation seed strength: 0.5" in text


def test_seed_resize_keeps_the_centre(engine: Engine) -> None:
    resized = _run(engine, seed_resize_from_w=64, seed_resize_from_h=64)
    assert np.array_equal(resized, _run(engine))  # same size: nothing changes
    assert not np.array_equal(_run(engine, seed_resize_from_w=32, seed_resize_from_h=32), resized)


def test_prompt_editing_switches_mid_run(engine: Engine) -> None:
    edited = _run(engine, prompt="[a red cat:a blue dog:1]", steps=4)
    assert not np.array_equal(edited, _run(engine, prompt="a red cat", steps=4))
    assert not np.array_equal(edited, _run(engine, prompt="a blue dog", steps=4))


def test_clip_skip_changes_the_image_and_is_in_the_infotext(engine: Engine) -> None:
    body = {**BASE, "override_settings": {"CLIP_stop_at_last_layers": 2}}
    assert not np.array_equal(_run(engine, **body), _run(engine))
    req = parse_txt2img(body, BUDGET)
    assert "Clip skip: 2" in infotext(req, 1, ModelInfo("t", "h"))
    assert info(req, ModelInfo("t", "h"))["clip_skip"] == 2


def test_long_negative_and_short_positive_generate(engine: Engine) -> None:
    image = _run(engine, negative_prompt="blurry, " * 60)
    assert image.shape == (64, 64, 3)


def test_extra_network_tags_are_refused_by_name_without_addons(engine: Engine) -> None:
    req = parse_txt2img({**BASE, "prompt": "a cat <lora:pixel-art:0.8>"}, BUDGET)
    assert req.cond_prompt == "a cat " and req.extra_networks == {"lora": [["pixel-art", "0.8"]]}
    with pytest.raises(InvalidField) as err:
        engine.generate(req)
    assert "pixel-art" in err.value.message and "no lora networks are installed" in err.value.message


def test_fields_knsd_cannot_honour_are_refused() -> None:
    for body, field in [
        ({"restore_faces": True}, "restore_faces"),
        ({"tiling": "yes"}, "tiling"),
        ({"override_settings": {"randn_source": "GPU"}}, "override_settings.randn_source"),
        ({"override_settings": {"made_up": 1}}, "override_settings.made_up"),
        (
            {"override_settings": {"CLIP_stop_at_last_layers": 13}},
            "override_settings.CLIP_stop_at_last_layers",
        ),
    ]:
        with pytest.raises(InvalidField) as err:
            parse_txt2img({**BASE, **body}, BUDGET)
        assert err.value.field == field
    with pytest.raises(InvalidField) as err:
        parse_script({**BASE, "script_name": "loopback"}, img2img=True)
    assert err.value.field == "script_name" and "sd upscale" in err.value.message
    # harmless fields pass
    req = parse_txt2img({**BASE, "save_images": True, "override_settings": {"samples_save": False}}, BUDGET)
    assert req.steps == 3


def test_comments_are_stripped_and_img2img_refuses_hires() -> None:
    req = parse_txt2img({**BASE, "prompt": "a cat # not this\nred"}, BUDGET)
    assert req.prompt == "a cat \nred"
    with pytest.raises(InvalidField) as err:
        parse_img2img({**BASE, "enable_hr": True}, BUDGET)
    assert err.value.field == "enable_hr"


def test_schedule_switches_at_a1111s_step(engine: Engine) -> None:
    """[a:b:2] with 4 steps: UNet calls 0, 1, 2 see "a", call 3 sees "b" (A1111's `step <= end_at_step`)."""
    import torch

    unet = engine.model.txt2img.unet
    towers = engine.towers()
    assert towers is not None
    from knsd.serve.prompts.conditioning import PromptOptions, encode_texts

    a = encode_texts(towers, ["a red cat", "a blue dog"], PromptOptions()).hidden[0]
    seen: list[torch.Tensor] = []
    original = unet.forward

    def spy(sample: Any, t: Any, encoder_hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(encoder_hidden_states[-1].clone())  # the positive half
        return original(sample, t, encoder_hidden_states, *args, **kwargs)

    unet.forward = spy
    try:
        _run(engine, prompt="[a red cat:a blue dog:2]", steps=4)
    finally:
        del unet.forward
    assert len(seen) == 4
    firsts = [torch.allclose(s, a, atol=1e-5) for s in seen]
    assert firsts == [True, True, True, False]


def test_hires_upscalers_are_the_listed_ones() -> None:
    from knsd.serve.api import hires, upscalers

    assert hires.LATENT_UPSCALE_MODES is upscalers.LATENT_UPSCALE_MODES  # one table: listed = accepted
    assert list(upscalers.LATENT_UPSCALE_MODES) == [  # A1111's shared.latent_upscale_modes, in its order
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    assert hires.IMAGE_UPSCALERS == upscalers.BUILTIN_UPSCALERS


def test_img2img_variation_seeds(engine: Engine) -> None:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "orange").save(buffer, format="PNG")
    body = {**BASE, "init_images": [base64.b64encode(buffer.getvalue()).decode()], "denoising_strength": 0.8}

    def run(**fields: Any) -> np.ndarray:
        [image] = engine.generate(parse_img2img({**body, **fields}, BUDGET)).images
        return np.asarray(image, dtype=np.int16)

    plain = run()
    assert np.array_equal(run(subseed=99, subseed_strength=0), plain)
    varied = run(subseed=99, subseed_strength=0.5)
    assert not np.array_equal(varied, plain) and np.array_equal(run(subseed=99, subseed_strength=0.5), varied)


def test_old_prompt_editing_timelines() -> None:
    # 1.0 is "all steps" on new timelines, step 1 on old ones
    body = {**BASE, "prompt": "a [b:1.0] c", "override_settings": {"use_old_scheduling": True}}
    req = parse_txt2img(body, BUDGET)
    assert req.use_old_scheduling
    assert "Old prompt editing timelines: True" in infotext(req, 1, ModelInfo("t", "h"))
    assert "Old prompt" not in infotext(parse_txt2img(BASE, BUDGET), 1, ModelInfo("t", "h"))


def _a1111_first_draw(
    seed: int, subseed: int, strength: float, shape: tuple[int, int, int], resize: tuple[int, int] | None
) -> np.ndarray:
    """A1111's first noise draw for one image, written from its documented semantics (modules/rng.py,
    shared docs §7) in numpy float64, independently of knsd's implementation: randn(seed) per image,
    slerp towards randn(subseed) normalising along dim 1 of (C, H, W), seed resize pasted in the centre."""
    import torch

    def randn(s: int, shp: tuple[int, ...]) -> np.ndarray:
        return torch.randn(shp, generator=torch.Generator("cpu").manual_seed(s)).double().numpy()

    noise_shape = (shape[0], resize[0] // 8, resize[1] // 8) if resize else shape
    noise = randn(seed, noise_shape)
    if strength != 0:
        sub = randn(subseed, noise_shape)
        low, high = (
            noise / np.linalg.norm(noise, axis=1, keepdims=True),
            sub / np.linalg.norm(sub, axis=1, keepdims=True),
        )
        dot = (low * high).sum(1)
        if dot.mean() > 0.9995:
            noise = noise * strength + sub * (1 - strength)
        else:
            omega = np.arccos(dot)
            noise = (np.sin((1 - strength) * omega) / np.sin(omega))[:, None, :] * noise + (
                np.sin(strength * omega) / np.sin(omega)
            )[:, None, :] * sub
    if noise_shape != shape:
        x = randn(seed, shape)
        for axis in (1, 2):  # centre the smaller in the larger, per axis
            n, m = noise.shape[axis], shape[axis]
            if n > m:
                start = (n - m) // 2
                noise = np.take(noise, range(start, start + m), axis=axis)
        oy, ox = (shape[1] - noise.shape[1]) // 2, (shape[2] - noise.shape[2]) // 2
        x[:, oy : oy + noise.shape[1], ox : ox + noise.shape[2]] = noise
        noise = x
    return noise


@pytest.mark.parametrize(
    ("strength", "resize"),
    [(0.0, None), (0.3, None), (1.0, None), (0.0, (48, 40)), (0.5, (128, 96)), (0.25, (96, 32))],
)
def test_first_noise_is_a1111s_first_draw(engine: Engine, strength: float, resize: Any) -> None:
    """The latents knsd hands the pipeline equal A1111's first draw (seeds, variation seeds, seed resize)."""
    fields: dict[str, Any] = {"seed": 1234, "subseed": 99, "subseed_strength": strength, "batch_size": 2}
    if resize:
        fields |= {"seed_resize_from_h": resize[0], "seed_resize_from_w": resize[1]}
    seen: list[Any] = []
    original = engine.passes.run

    def spy(run: Any, steps: int) -> Any:
        seen.append(run.kwargs["latents"].detach().double().numpy())
        return original(run, steps)

    engine.passes.run = spy  # type: ignore[method-assign]
    try:
        _run_batch(engine, **fields)
    finally:
        del engine.passes.run
    [latents] = seen
    seeds = [1234, 1235] if strength == 0 else [1234, 1234]  # A1111: with variation all share the seed
    for i, seed in enumerate(seeds):
        expected = _a1111_first_draw(seed, 99 + i, strength, (4, 8, 8), resize)
        np.testing.assert_allclose(latents[i], expected, rtol=0, atol=1e-5)


def _run_batch(engine: Engine, **fields: Any) -> list[Any]:
    return engine.generate(parse_txt2img({**BASE, "steps": 1, **fields}, BUDGET)).images


@pytest.mark.parametrize(
    ("size", "scale", "resize", "target", "output"),
    [
        # A1111's calculate_target_resolution, worked by hand from its rules (shared docs §5.2)
        ((64, 64), 2.0, (0, 0), (128, 128), (128, 128)),
        ((96, 64), 1.5, (0, 0), (144, 96), (144, 96)),
        ((64, 64), 2.0, (96, 0), (96, 96), (96, 96)),  # only x: height follows the aspect
        ((96, 64), 2.0, (0, 120), (180, 120), (176, 120)),  # only y; pixels are whole latent cells
        ((64, 64), 2.0, (96, 80), (96, 96), (96, 80)),  # cover 96x80 with 96x96, crop 2 latent rows
        ((96, 64), 2.0, (80, 80), (120, 80), (80, 80)),  # cover with 120x80, crop 5 latent cols (2 + 3)
    ],
)
def test_hires_target_sizes_follow_a1111(
    size: tuple[int, int],
    scale: float,
    resize: tuple[int, int],
    target: tuple[int, int],
    output: tuple[int, int],
) -> None:
    body = {**BASE, "width": size[0], "height": size[1], "enable_hr": True, "hr_scale": scale}
    body |= {"hr_resize_x": resize[0], "hr_resize_y": resize[1]}
    req = parse_txt2img(body, BUDGET)
    assert req.hires is not None
    assert (req.hires.target_w, req.hires.target_h) == target
    assert req.hires.output_size == output
