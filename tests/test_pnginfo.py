"""png-info: A1111's infotext parser and metadata reader, ported from its v1.10 source (pure)."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from knsd.serve.api.pnginfo import parse_generation_parameters, read_info
from knsd.serve.api.styles import PromptStyle, StyleDatabase

A1111_HIRES = (
    "masterpiece, (cat:1.2)\nsecond line\n"
    "Negative prompt: lowres\nbad hands\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Clip skip: 2, "
    'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


def test_parses_a1111_infotext_with_its_defaults() -> None:
    res = parse_generation_parameters(A1111_HIRES)
    assert res["Prompt"] == "masterpiece, (cat:1.2)\nsecond line"
    assert res["Negative prompt"] == "lowres\nbad hands"
    assert (res["Steps"], res["Sampler"], res["Schedule type"], res["CFG scale"]) == (
        "20",
        "DPM++ 2M",
        "Karras",
        "7.0",
    )
    assert (res["Size-1"], res["Size-2"]) == ("512", "768")  # WxH values split, kept as strings
    assert res["Lora hashes"] == "add_detail: 7c6bad76eb54"  # quoted values are JSON-decoded
    assert res["Clip skip"] == "2" and res["Hires upscale"] == "2"
    assert res["Emphasis"] == "Original"  # (cat:1.2) uses emphasis
    for key, value in {
        "Hires resize-1": 0,
        "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Masked area padding": 32,
        "RNG": "GPU",
        "Schedule max sigma": 0,
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
        "Refiner switch by sampling steps": False,
    }.items():
        assert res[key] == value, key
    assert "Downcast alphas_cumprod" not in res  # v1.10.1 needs no back-compat option


def test_short_last_line_is_prompt_and_old_versions_get_backcompat() -> None:
    res = parse_generation_parameters("a cat\nSteps: 20, Sampler: Euler")
    assert res["Prompt"] == "a cat\nSteps: 20, Sampler: Euler" and "Steps" not in res
    assert res["Clip skip"] == "1" and "Emphasis" not in res
    old = parse_generation_parameters("[a:b:5]\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.5.1")
    assert old["Old prompt editing timelines"] is True and old["Pad conds v0"] is True
    assert old["Downcast alphas_cumprod"] is True
    assert parse_generation_parameters("")["Prompt"] == ""


def test_old_first_pass_size_becomes_hires_resize() -> None:
    res = parse_generation_parameters("x\nSteps: 20, Size: 1024x1024, First pass size: 0x0, Seed: 1")
    assert (res["Size-1"], res["Size-2"], res["Hires resize-1"], res["Hires resize-2"]) == (
        512,
        512,
        1024,
        1024,
    )


def test_styles_are_taken_out_when_known() -> None:
    db = StyleDatabase({"photo": PromptStyle("photo", "photo of {prompt}, 8k", "blurry")})
    res = parse_generation_parameters(
        "photo of a cat, 8k\nNegative prompt: blurry\nSteps: 2, Seed: 1, Size: 64x64", db
    )
    assert (res["Prompt"], res["Negative prompt"], res["Styles array"]) == ("a cat", "", ["photo"])


def _png(**text: str) -> Image.Image:
    meta = PngInfo()
    for key, value in text.items():
        meta.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=meta, dpi=(72, 72))
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_read_info_from_png_and_jpeg_exif() -> None:
    geninfo, items = read_info(_png(parameters="a cat\nSteps: 1", Software="x", postprocessing="y"))
    assert geninfo == "a cat\nSteps: 1"
    assert items == {"Software": "x", "postprocessing": "y"}  # dpi is housekeeping, dropped
    assert read_info(_png()) == (None, {})
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + "ein Hund\nSteps: 3".encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif.tobytes())
    geninfo, items = read_info(Image.open(io.BytesIO(buffer.getvalue())))
    assert geninfo == "ein Hund\nSteps: 3" and items["exif comment"] == geninfo
