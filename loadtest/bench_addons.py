"""Benchmark of knsd's add-ons, each ratio measured side by side in one run (A B A B, medians):

On the full-size SD 1.5 architecture (random weights, the single file of `knsd bench --cold-start`, built
into the knsd cache if missing), with a realistic LoRA: kohya keys, rank 128 (--rank), fp16, over the UNet's
attention (to_q, to_k, to_v, to_out.0) and feed-forward (ff.net.0.proj, ff.net.2) layers and the text
encoder's attention and MLP (~150 MB, the size of a real rank-128 SD 1.5 LoRA):
(1) knsd's read + parse + merge + exact restore / diffusers' load_lora_weights + fuse_lora + unfuse_lora +
    unload_lora_weights of the same file, both from the page cache (needs `peft`, a dev extra);
(2) a request whose LoRA is in neither knsd's RAM cache nor the page cache (evicted before each request
    with posix_fadvise(DONTNEED)), over the same request without a LoRA: exact (A1111's semantics, the LoRA
    loaded before step 1) and with --lora-overlap-steps K (loaded while the first K steps run);
(3) PSNR of the overlapped image against the exact one.
On the tiny model (its tiny ControlNet):
(4) latency of a ControlNet request (one canny unit) / a plain one.
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _engine(model: Any, cache: Path, overlap: int, lora_dir: Path, name: str) -> Any:
    from knsd.serve.addons.setup import create_addons
    from knsd.serve.generate.engine import Engine
    from knsd.serve.settings import ServeSettings

    engine = Engine(model)
    settings = ServeSettings(model=name, cache=cache, lora_overlap_steps=overlap, lora_dir=lora_dir)
    engine.addons = create_addons(model, settings)
    return engine


def _forget(engine: Any) -> None:
    """Empty the LoRA RAM cache: the next request reads the file again (an uncached LoRA)."""
    from knsd.serve.lru import LruCache

    engine.addons.cache = LruCache(engine.addons.cache.capacity)


def realistic_lora(components: dict[str, Any], rank: int) -> dict[str, Any]:
    """kohya LoRA over attention and feed-forward layers (UNet) and attention + MLP (text encoder), fp16."""
    import torch

    gen = torch.Generator().manual_seed(7)
    unet_targets = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                    "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")  # fmt: skip
    te_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    out: dict[str, Any] = {}
    for component, prefix, targets in (
        ("unet", "lora_unet_", unet_targets),
        ("text_encoder", "lora_te_", te_targets),
    ):
        for name, module in components[component].named_modules():
            if not name.endswith(targets) or getattr(module, "weight", None) is None:
                continue
            fan_out, fan_in = module.weight.shape[:2]
            if component == "text_encoder" and not name.startswith("text_model."):
                name = "text_model." + name  # kohya's names (transformers 4 layout)
            key = prefix + name.replace(".", "_")
            down = torch.randn((rank, fan_in), generator=gen) / fan_in**0.5
            out[f"{key}.lora_down.weight"] = down.to(torch.float16)
            out[f"{key}.lora_up.weight"] = (torch.randn((fan_out, rank), generator=gen) * 0.01).to(
                torch.float16
            )
            out[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    return out


def _write_lora(folder: Path, components: dict[str, Any], rank: int) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench-lora.safetensors"
    save_file(realistic_lora(components, rank), str(path), metadata={"ss_network_dim": str(rank)})
    return path


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache: the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def patch_ratio(model: Any, engine: Any, path: Path, repeats: int) -> dict[str, float]:
    """(1): knsd read + parse + patch + restore vs diffusers load + fuse + unfuse + unload."""
    from knsd.serve.addons.lora import parse_lora, read_state_dict
    from knsd.serve.addons.patch import LoraUse

    a = engine.addons

    def knsd_cycle() -> None:
        lora = parse_lora("b", read_state_dict(path))
        a.patcher.apply([LoraUse("b", lora, 1.0, 1.0)])
        a.patcher.restore()

    pipe = model.txt2img

    def diffusers_cycle() -> None:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="bench")
        pipe.fuse_lora(lora_scale=1.0)
        pipe.unfuse_lora()
        pipe.unload_lora_weights()

    cached = parse_lora("b", read_state_dict(path))

    def knsd_cached() -> None:
        a.patcher.apply([LoraUse("b", cached, 1.0, 1.0)])
        a.patcher.restore()

    out: dict[str, float] = {}
    knsd_cycle()  # warm both paths (imports, first allocation)
    try:
        import peft  # noqa: F401
    except ImportError:
        peft = None
    if peft is not None:
        diffusers_cycle()
    times: dict[str, list[float]] = {"knsd": [], "diffusers": [], "cached": []}
    for i in range(repeats):  # A B A B, the order swapped every round
        sides = [("knsd", knsd_cycle), ("cached", knsd_cached)]
        if peft is not None:
            sides.append(("diffusers", diffusers_cycle))
        for name, fn in sides if i % 2 == 0 else sides[::-1]:
            times[name].append(_timed(fn))
    out["knsd_s"] = statistics.median(times["knsd"])
    out["knsd_cached_s"] = statistics.median(times["cached"])
    out["diffusers_s"] = statistics.median(times["diffusers"]) if times["diffusers"] else math.nan
    out["ratio"] = (
        statistics.median(k / d for k, d in zip(times["knsd"], times["diffusers"], strict=True))
        if times["diffusers"]
        else math.nan
    )
    return out


def _pixels(image: Any) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB")).astype(np.float64)


def _psnr(a: Any, b: Any) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def request_ratios(
    exact: Any, overlap: Any, body: dict[str, Any], path: Path, repeats: int
) -> dict[str, float]:
    """(2) and (3): a request with an uncached LoRA (evicted from RAM and page cache) over a plain one."""
    from knsd.serve.api.request import parse_txt2img

    plain = parse_txt2img(body, 1 << 30)
    lora = parse_txt2img({**body, "prompt": body["prompt"] + " <lora:bench-lora:1>"}, 1 << 30)
    exact.generate(plain)  # warm-up
    overlap.generate(lora)
    times: dict[str, list[float]] = {"plain": [], "exact": [], "overlap": []}
    images: dict[str, Any] = {}
    late: list[int] = []
    kinds = ("plain", "exact", "overlap")
    for i in range(repeats):
        for kind in kinds[i % 3 :] + kinds[: i % 3]:  # the order rotated every round
            engine = overlap if kind == "overlap" else exact
            _forget(engine)
            evict(path)
            started = time.perf_counter()
            result = engine.generate(plain if kind == "plain" else lora)
            times[kind].append(time.perf_counter() - started)
            images[kind] = result.images[0]
            if kind == "overlap":
                late += list(overlap.addons.last_late_steps)
    item = exact.addons.find_lora("bench-lora")
    loads: dict[str, list[float]] = {"uncached": [], "page cache": []}
    for _ in range(repeats):
        for where in loads:
            _forget(exact)
            if where == "uncached":
                evict(path)
            loads[where].append(_timed(lambda: exact.addons.load_lora(item)))
    plain_s = statistics.median(times["plain"])
    ratio = {
        k: statistics.median(t / p for t, p in zip(times[k], times["plain"], strict=True)) for k in kinds
    }
    return {
        "plain_s": plain_s,
        "exact_s": statistics.median(times["exact"]),
        "overlap_s": statistics.median(times["overlap"]),
        "exact_ratio": ratio["exact"],
        "overlap_ratio": ratio["overlap"],
        "psnr_db": _psnr(_pixels(images["exact"]), _pixels(images["overlap"])),
        "late_step": statistics.median(late) if late else 0,
        "load_uncached_s": statistics.median(loads["uncached"]),
        "load_cached_s": statistics.median(loads["page cache"]),
        "step_s": plain_s / body["steps"],
    }


def controlnet_ratio(engine: Any, body: dict[str, Any], repeats: int) -> dict[str, float]:
    """(4): one canny unit with the tiny ControlNet over a plain request."""
    import dataclasses

    import numpy as np
    from PIL import Image

    from knsd.serve.api.request import parse_txt2img

    side = body["width"]
    grid = (np.indices((side, side)).sum(0) // 16 % 2 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.stack([grid] * 3, axis=-1)).save(buf, "PNG")
    unit = {
        "enabled": True,
        "module": "canny",
        "model": "tiny-canny",
        "image": base64.b64encode(buf.getvalue()).decode(),
    }
    cn_body = {**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    plain = parse_txt2img(body, 1 << 30)
    controlled = parse_txt2img(cn_body, 1 << 30)
    controlled = dataclasses.replace(controlled, addons=engine.addons.prepare(cn_body, {}))
    engine.generate(controlled)  # warm-up: loads the ControlNet into its cache
    pairs = []
    for i in range(repeats):  # the order swapped every round
        if i % 2 == 0:
            pairs.append(
                (_timed(lambda: engine.generate(plain)), _timed(lambda: engine.generate(controlled)))
            )
        else:
            second = _timed(lambda: engine.generate(controlled))
            pairs.append((_timed(lambda: engine.generate(plain)), second))
    return {
        "plain_s": statistics.median(p[0] for p in pairs),
        "controlnet_s": statistics.median(p[1] for p in pairs),
        "ratio": statistics.median(p[1] / p[0] for p in pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--size", type=int, default=128, help="width = height of the full-size model's images"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=6, help="--lora-overlap-steps K for the overlap side")
    parser.add_argument("--rank", type=int, default=128, help="the benchmark LoRA's rank (32-128 are usual)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    from diffusers.utils import logging as diffusers_logging

    from knsd.bench.checkpoint import bench_checkpoint
    from knsd.bench.coldstart import ensure_checkpoint
    from knsd.cache import cache_dir
    from knsd.serve.models.loader import load_model

    diffusers_logging.set_verbosity_error()
    results: dict[str, Any] = {"config": vars(args)}
    user_cache = cache_dir()
    checkpoint = ensure_checkpoint(
        bench_checkpoint(user_cache), "sd15", user_cache, lambda m: print(m, file=sys.stderr)
    )
    with tempfile.TemporaryDirectory(prefix="knsd-bench-addons-", dir=Path.home()) as tmp:
        model = load_model(str(checkpoint), user_cache, device="cpu")
        components = {k: getattr(model.txt2img, k) for k in ("unet", "text_encoder")}
        loras = Path(tmp) / "Lora"
        path = _write_lora(loras, components, args.rank)
        results["lora_mb"] = path.stat().st_size / 1e6
        exact = _engine(model, Path(tmp), 0, loras, str(checkpoint))
        overlap = _engine(model, Path(tmp), args.overlap, loras, str(checkpoint))
        body = {"prompt": "a cat", "width": args.size, "height": args.size, "steps": args.steps, "seed": 3}
        results["patch"] = patch_ratio(model, exact, path, args.repeats)
        results["request"] = request_ratios(exact, overlap, body, path, args.repeats)
        del model, components, exact, overlap
        gc.collect()
        tiny = load_model("tiny", Path(tmp) / "cache", device="cpu")
        tiny_body = {"prompt": "a cat", "width": 128, "height": 128, "steps": 20, "seed": 3}
        results["controlnet"] = controlnet_ratio(
            _engine(tiny, Path(tmp) / "cache", 0, loras, "tiny"), tiny_body, args.repeats
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    p, r, c = results["patch"], results["request"], results["controlnet"]
    print(f"full-size SD 1.5 (random weights, CPU float32), {args.size}x{args.size}, {args.steps} steps; LoRA rank "
          f"{args.rank} over attention + feed-forward, {results['lora_mb']:.0f} MB; A B A B, medians of {args.repeats}")  # fmt: skip
    print(
        f"(1) LoRA read+patch+restore / diffusers load+fuse+unfuse+unload: {p['ratio']:.3f}"
        f"  ({p['knsd_s'] * 1000:.0f} ms vs {p['diffusers_s'] * 1000:.0f} ms; from knsd's RAM cache {p['knsd_cached_s'] * 1000:.0f} ms)"
        "  goal <= 0.3"
    )
    window = args.overlap * r["step_s"]
    print(
        f"(2) uncached LoRA request / plain: exact {r['exact_ratio']:.3f}, overlap K={args.overlap} {r['overlap_ratio']:.3f}"
        f"  (LoRA load {r['load_uncached_s'] * 1000:.0f} ms evicted from the page cache, {r['load_cached_s'] * 1000:.0f} ms"
        f" from it; overlap window {window * 1000:.0f} ms; patched in at step {r['late_step']:.0f})"
    )
    print(f"(3) overlap vs exact image: PSNR {r['psnr_db']:.1f} dB")
    print(
        f"(4) tiny model, 128x128, 20 steps: ControlNet (1 canny unit) / plain: {c['ratio']:.3f}"
        f"  ({c['controlnet_s']:.3f} s vs {c['plain_s']:.3f} s)"
    )


if __name__ == "__main__":
    main()
