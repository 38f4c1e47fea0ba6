"""Add-on building blocks on the real tiny pipeline: LoRA formats and maths, exact restore, caches, hashes."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from knsd.errors import InvalidField
from knsd.serve.addons.files import AddonFile, addnet_hash, lora_shorthash, read_metadata, scan
from knsd.serve.addons.lora import LoraLayer, parse_lora, read_state_dict
from knsd.serve.addons.patch import LoraUse, WeightPatcher, sgm_to_diffusers
from knsd.serve.addons.request import lora_tag
from knsd.serve.addons.tiny import lora_state_dict, write_lora
from knsd.serve.lru import LruCache


def _components(model: Any) -> dict[str, Any]:
    return {"unet": model.txt2img.unet, "text_encoder": model.txt2img.text_encoder}


def _weights(model: Any) -> dict[str, torch.Tensor]:
    out = {}
    for name, root in _components(model).items():
        out.update({f"{name}.{k}": v.detach().clone() for k, v in root.state_dict().items()})
    return out


def test_patch_and_restore_are_exact(tiny_model: Any) -> None:
    before = _weights(tiny_model)
    lora = parse_lora("t", lora_state_dict(_components(tiny_model)))
    patcher = WeightPatcher(_components(tiny_model))
    touched = patcher.apply([LoraUse("t", lora, 1.0, 1.0)])
    assert touched == len(lora.layers) > 20  # every layer of the file found a module
    changed = {k for k, v in _weights(tiny_model).items() if not torch.equal(v, before[k])}
    assert any(k.startswith("text_encoder.") for k in changed) and any(k.startswith("unet.") for k in changed)
    patcher.apply([LoraUse("t", lora, 0.5, 0.5)])  # stacking on top of a patch, then one restore
    patcher.restore()
    after = _weights(tiny_model)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_delta_is_up_down_times_alpha_over_rank(tiny_model: Any) -> None:
    state = lora_state_dict(_components(tiny_model), rank=4, alpha=2.0)
    key = next(k for k in state if k.endswith("attn1_to_q.lora_down.weight"))
    prefix = key.removesuffix(".lora_down.weight")
    lora = parse_lora("t", state)
    layer = next(x for x in lora.layers if prefix.endswith(x.module))
    expected = state[prefix + ".lora_up.weight"] @ state[prefix + ".lora_down.weight"] * (2.0 / 4) * 0.7
    assert torch.allclose(layer.delta(0.7, None, "cpu", torch.float32), expected)
    # dyn keeps the first ranks only (DyLoRA); a `scale` key wins over alpha.
    up, down = state[prefix + ".lora_up.weight"], state[prefix + ".lora_down.weight"]
    assert torch.allclose(layer.delta(1.0, 2, "cpu", torch.float32), up[:, :2] @ down[:2] * 0.5)
    scaled = parse_lora(
        "t", {k: v for k, v in state.items() if k.startswith(prefix)} | {prefix + ".scale": torch.tensor(3.0)}
    )
    assert scaled.layers[0].scale == 3.0


def test_kohya_and_peft_files_patch_the_same_weights(tiny_model: Any, tmp_path: Path) -> None:
    components = _components(tiny_model)
    kohya = parse_lora("k", read_state_dict(write_lora(tmp_path / "k.safetensors", components)))
    peft = parse_lora("p", read_state_dict(write_lora(tmp_path / "p.safetensors", components, peft=True)))
    results = []
    for lora in (kohya, peft):
        patcher = WeightPatcher(components)
        assert patcher.apply([LoraUse("x", lora, 0.8, 1.2)]) == len(lora.layers)
        results.append(_weights(tiny_model))
        patcher.restore()
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_locon_with_lora_mid_rebuilds_the_conv() -> None:
    """A CP/Tucker LoCon layer (down 1x1, mid kxk, up 1x1) merges into the conv it composes to."""
    gen = torch.Generator().manual_seed(0)
    down, mid, up = (torch.randn(s, generator=gen) for s in ((3, 5, 1, 1), (3, 3, 3, 3), (6, 3, 1, 1)))
    layer = LoraLayer("unet", "x", up, down, mid, 1.0)
    x = torch.randn((1, 5, 8, 8), generator=gen)
    composed = torch.nn.functional.conv2d(
        torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down), mid, padding=1), up
    )
    merged = torch.nn.functional.conv2d(x, layer.delta(1.0, None, "cpu", torch.float32), padding=1)
    assert torch.allclose(composed, merged, atol=1e-4)


def test_unsupported_module_types_are_refused_by_name() -> None:
    with pytest.raises(InvalidField, match="'loha'.*hada_w1_a"):
        parse_lora("loha", {"lora_unet_x.hada_w1_a": torch.zeros(2, 2)})
    with pytest.raises(InvalidField, match="no LoRA weights"):
        parse_lora("empty", {"something": torch.zeros(1)})


@pytest.mark.parametrize(
    ("sgm", "diffusers"),
    [
        (
            "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
        ),
        ("input_blocks_1_0_in_layers_2", "down_blocks_0_resnets_0_conv1"),
        ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
        ("middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
        ("middle_block_2_out_layers_3", "mid_block_resnets_1_conv2"),
        ("output_blocks_2_1_proj_out", "up_blocks_0_attentions_2_proj_out"),
        ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
        ("output_blocks_8_0_skip_connection", "up_blocks_2_resnets_2_conv_shortcut"),
        ("output_blocks_5_0_emb_layers_1", "up_blocks_1_resnets_2_time_emb_proj"),
    ],
)
def test_sdxl_kohya_block_names(sgm: str, diffusers: str) -> None:
    # SDXL: two layers per block, attention in up blocks 0 and 1.
    assert sgm_to_diffusers(sgm, 2, frozenset({0, 1})) == diffusers


@pytest.mark.parametrize(
    ("args", "te", "unet", "dyn"),
    [
        (["a"], 1.0, 1.0, None),
        (["a", "0.8"], 0.8, 0.8, None),
        (["a", "0.8", "0.3"], 0.8, 0.3, None),
        (["a", "1", "0.5", "2"], 1.0, 0.5, 2),
        (["a", "te=0.2", "unet=0.6"], 0.2, 0.6, None),
        (["a", "1", "unet=0.5", "dyn=13"], 1.0, 0.5, 13),
    ],
)
def test_lora_tag_forms(args: list[str], te: float, unet: float, dyn: int | None) -> None:
    tag = lora_tag(args)
    assert (tag.name, tag.te, tag.unet, tag.dyn) == ("a", te, unet, dyn)


def test_lru_cache_evicts_least_recently_used() -> None:
    cache: LruCache[str] = LruCache(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 40)
    assert "b" not in cache and "a" in cache and "c" in cache and cache.size == 80
    cache.put("huge", "H", 101)  # bigger than the whole cache: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2


def test_addnet_hash_ignores_metadata(tiny_model: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = lora_state_dict(_components(tiny_model))
    save_file(state, str(tmp_path / "a.safetensors"), metadata={"ss_output_name": "x"})
    save_file(state, str(tmp_path / "b.safetensors"), metadata={"ss_output_name": "a much longer name"})
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert addnet_hash(a) == addnet_hash(b)
    raw = a.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert addnet_hash(a) == hashlib.sha256(raw[8 + length :]).hexdigest()
    assert read_metadata(b) == {"ss_output_name": "a much longer name"}
    items = scan(tmp_path, (".safetensors",))
    assert list(items) == ["a", "b"] and lora_shorthash(items["a"]) == addnet_hash(a)[:12]
    meta = AddonFile("m", a, 0.0, 1, {"sshs_model_hash": "f" * 64})
    assert lora_shorthash(meta) == "f" * 12  # kohya's stored hash wins, as in A1111
    assert json.loads(json.dumps(read_metadata(a))) == {"ss_output_name": "x"}


def _engine(model: Any, cache: Path, overlap: int) -> Any:
    from knsd.serve.addons.setup import create_addons
    from knsd.serve.generate.engine import Engine
    from knsd.serve.settings import ServeSettings

    engine = Engine(model)
    engine.addons = create_addons(model, ServeSettings(cache=cache, lora_overlap_steps=overlap))
    return engine


def test_overlap_loads_in_the_background_at_most_k_steps_late(tiny_model: Any, cache: Path) -> None:
    import numpy as np

    from knsd.serve.api.request import parse_txt2img

    body = {"prompt": "a cat <lora:tiny-lora:1>", "width": 64, "height": 64, "steps": 6, "seed": 5}
    req = parse_txt2img(body, 1 << 30)
    exact = _engine(tiny_model, cache, 0)
    reference = np.asarray(exact.generate(req).images[0])
    assert exact.addons.last_late_steps == []  # K = 0: loaded before the first step (A1111)
    overlapped = _engine(tiny_model, cache, 2)
    # A slow disk: the load finishes only once step K is reached, so the request waits for it there.
    load, progress = overlapped.addons.load_lora, overlapped.progress

    def slow_load(item: Any) -> Any:
        while progress.sampling_step < 2:
            time.sleep(0.005)
        return load(item)

    overlapped.addons.load_lora = slow_load
    late = overlapped.generate(req)
    assert overlapped.addons.last_late_steps == [2]
    assert "Lora hashes" in late.extra
    assert not np.array_equal(np.asarray(late.images[0]), reference)  # the first two steps ran without it
    overlapped.addons.load_lora = load
    # Cached now: no overlap, the exact image.
    assert np.array_equal(np.asarray(overlapped.generate(req).images[0]), reference)
    assert overlapped.addons.last_late_steps == []


def test_sdxl_lora_controlnet_and_embedding(cache: Path) -> None:
    import base64
    import dataclasses
    import io

    import numpy as np
    from PIL import Image

    from knsd.serve.api.request import parse_txt2img
    from knsd.serve.models.loader import load_model

    model = load_model("tiny-sdxl", cache, device="cpu")
    engine = _engine(model, cache, 0)
    assert list(engine.addons.embeddings.loaded) == ["tiny-emb"]  # clip_l + clip_g widths match

    def generate(prompt: str = "a cat", **extra: Any) -> Any:
        body = {"prompt": prompt, "width": 64, "height": 64, "steps": 3, "seed": 7, "cfg_scale": 5, **extra}
        req = parse_txt2img(body, 1 << 30)
        out = engine.generate(
            dataclasses.replace(req, addons=engine.addons.prepare(body, req.extra_networks))
        )
        return np.asarray(out.images[0]), out.extra

    base, _ = generate()
    lora, extra = generate("a cat <lora:tiny-lora:1>")
    assert not np.array_equal(lora, base) and extra["Lora hashes"].startswith("tiny-lora: ")
    buf = io.BytesIO()
    grid = (np.indices((64, 64)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([grid] * 3, axis=-1)).save(buf, "PNG")
    unit = {
        "enabled": True,
        "module": "canny",
        "model": "tiny-canny",
        "image": base64.b64encode(buf.getvalue()).decode(),
    }
    controlled, extra = generate(alwayson_scripts={"controlnet": {"args": [unit]}})
    assert not np.array_equal(controlled, base) and "ControlNet 0" in extra
    _, extra = generate("a tiny-emb cat")
    assert extra["TI hashes"].startswith("tiny-emb: ")
    assert np.array_equal(generate()[0], base)


def controlnet_to_ldm(net: Any) -> dict[str, Any]:
    """The original (sd-webui-controlnet) layout of a diffusers ControlNet: the inverse of diffusers'
    `convert_controlnet_checkpoint`, for tests."""
    from types import SimpleNamespace

    from knsd.bench.ldm import unet_to_ldm

    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    blocks = len(net.controlnet_cond_embedding.blocks)
    out: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("controlnet_cond_embedding.conv_in."):
            out[f"input_hint_block.0.{parts[-1]}"] = value
        elif key.startswith("controlnet_cond_embedding.blocks."):
            out[f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[-1]}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            out[f"input_hint_block.{2 * (blocks + 1)}.{parts[-1]}"] = value
        elif key.startswith("controlnet_down_blocks."):
            out[f"zero_convs.{parts[1]}.0.{parts[-1]}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{parts[-1]}"] = value
        else:
            rest[key] = value
    config = SimpleNamespace(layers_per_block=net.config.layers_per_block, up_block_types=())
    for key, value in unet_to_ldm(rest, config).items():
        out[key.removeprefix("model.diffusion_model.")] = value
    return {"control_model." + k: v for k, v in out.items()}


def test_original_layout_controlnet_loads_offline(tiny_model: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from knsd.serve.addons.controlnet.models import load_controlnet
    from knsd.serve.addons.tiny import controlnet_model

    unet = tiny_model.txt2img.unet
    reference = controlnet_model(unet)
    path = tmp_path / "control_tiny_canny.safetensors"
    save_file(controlnet_to_ldm(reference), str(path))
    loaded = load_controlnet(path, unet)
    expected = reference.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
