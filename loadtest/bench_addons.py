"""Benchmark of knsd's add-ons on the tiny model, each ratio measured side by side in one run:

(1) LoRA patch + restore (read, parse, merge, restore) / diffusers' load_lora_weights + fuse_lora +
    unfuse_lora + unload_lora_weights on the same file (goal <= 0.3; needs `peft`, else skipped)
(2) latency of a request with an uncached LoRA / the same request without one, exact (K = 0) and with
    --lora-overlap-steps K (goal with overlap <= 1.05 when loading takes less than the overlap window)
(3) pixel difference of overlap mode against exact mode (PSNR, dB)
(4) latency of a ControlNet request (one canny unit) / a plain one
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
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


def _engine(model: Any, cache: Path, overlap: int, lora_dir: Path) -> Any:
    from knsd.serve.addons.setup import create_addons
    from knsd.serve.generate.engine import Engine
    from knsd.serve.settings import ServeSettings

    engine = Engine(model)
    settings = ServeSettings(cache=cache, lora_overlap_steps=overlap, lora_dir=lora_dir)
    engine.addons = create_addons(model, settings)
    return engine


def _forget(engine: Any) -> None:
    """Empty the LoRA RAM cache: the next request reads the file again (an uncached LoRA)."""
    from knsd.serve.lru import LruCache

    engine.addons.cache = LruCache(engine.addons.cache.capacity)


def _bench_file(folder: Path, components: dict[str, Any], filler_mb: int) -> Path:
    """A rank-32 LoRA over every targeted layer, padded to a real LoRA's size with ignored tensors."""
    import torch
    from safetensors.torch import save_file

    from knsd.serve.addons.tiny import lora_state_dict

    state = lora_state_dict(components, rank=32, alpha=1.0)  # scale 1/32: a mild LoRA
    if filler_mb:
        state["bench_filler"] = torch.zeros(
            filler_mb * 1024 * 1024 // 4
        )  # ignored on load; read like the rest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("bench-lora.safetensors" if filler_mb else "bench-small.safetensors")
    save_file(state, str(path))
    return path


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

        diffusers_cycle()
        pairs = [(_timed(knsd_cycle), _timed(diffusers_cycle)) for _ in range(repeats)]
        out["diffusers_s"] = statistics.median(p[1] for p in pairs)
    except ImportError:
        pairs = [(_timed(knsd_cycle), math.nan) for _ in range(repeats)]
        out["diffusers_s"] = math.nan
    out["knsd_s"] = statistics.median(p[0] for p in pairs)
    out["knsd_cached_s"] = statistics.median(_timed(knsd_cached) for _ in range(repeats))
    out["ratio"] = out["knsd_s"] / out["diffusers_s"]
    return out


def _pixels(image: Any) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB")).astype(np.float64)


def _psnr(a: Any, b: Any) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def request_ratios(exact: Any, overlap: Any, body: dict[str, Any], repeats: int) -> dict[str, float]:
    """(2) and (3): uncached-LoRA request latency over a plain request, exact and overlapped."""
    from knsd.serve.api.request import parse_txt2img

    plain = parse_txt2img(body, 1 << 30)
    lora = parse_txt2img({**body, "prompt": body["prompt"] + " <lora:bench-lora:1>"}, 1 << 30)
    exact.generate(plain)  # warm-up
    rows = []
    for _ in range(repeats):
        _forget(exact)
        _forget(overlap)
        t_plain = _timed(lambda: exact.generate(plain))
        started = time.perf_counter()
        exact_image = exact.generate(lora).images[0]
        t_exact = time.perf_counter() - started
        started = time.perf_counter()
        overlap_image = overlap.generate(lora).images[0]
        t_overlap = time.perf_counter() - started
        late = list(overlap.addons.last_late_steps)
        rows.append((t_plain, t_exact, t_overlap, _psnr(_pixels(exact_image), _pixels(overlap_image)), late))
    item = exact.addons.find_lora("bench-lora")

    def load_once() -> None:
        _forget(exact)
        exact.addons.load_lora(item)

    load_s = statistics.median(_timed(load_once) for _ in range(repeats))
    plain_s = statistics.median(r[0] for r in rows)
    return {
        "plain_s": plain_s,
        "exact_s": statistics.median(r[1] for r in rows),
        "overlap_s": statistics.median(r[2] for r in rows),
        "exact_ratio": statistics.median(r[1] / r[0] for r in rows),
        "overlap_ratio": statistics.median(r[2] / r[0] for r in rows),
        "psnr_db": statistics.median(r[3] for r in rows),
        "late_step": statistics.median(r[4][0] if r[4] else 0 for r in rows),
        "load_s": load_s,
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
    pairs = [
        (_timed(lambda: engine.generate(plain)), _timed(lambda: engine.generate(controlled)))
        for _ in range(repeats)
    ]
    return {
        "plain_s": statistics.median(p[0] for p in pairs),
        "controlnet_s": statistics.median(p[1] for p in pairs),
        "ratio": statistics.median(p[1] / p[0] for p in pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="width = height of the generated images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=5, help="--lora-overlap-steps K for the overlap side")
    parser.add_argument(
        "--lora-mb", type=int, default=144, help="size of the benchmark LoRA file (SD 1.5 rank 128)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    from diffusers.utils import logging as diffusers_logging

    from knsd.serve.models.loader import load_model

    diffusers_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="knsd-bench-addons-") as tmp:
        cache = Path(tmp)
        model = load_model("tiny", cache, device="cpu")
        components = {k: getattr(model.txt2img, k) for k in ("unet", "text_encoder")}
        loras = cache / "Lora"
        small = _bench_file(loras / "small", components, 0)
        _bench_file(loras, components, args.lora_mb)
        exact = _engine(model, cache, 0, loras)
        overlap = _engine(model, cache, args.overlap, loras)
        body = {"prompt": "a cat", "width": args.size, "height": args.size, "steps": args.steps, "seed": 3}
        results = {
            "patch": patch_ratio(model, exact, small, args.repeats),
            "request": request_ratios(exact, overlap, body, args.repeats),
            "controlnet": controlnet_ratio(exact, body, args.repeats),
            "config": vars(args),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    p, r, c = results["patch"], results["request"], results["controlnet"]
    print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, medians of {args.repeats}")
    print(
        f"(1) LoRA read+patch+restore / diffusers load+fuse+unfuse+unload: {p['ratio']:.3f}"
        f"  ({p['knsd_s'] * 1000:.1f} ms vs {p['diffusers_s'] * 1000:.1f} ms; from the RAM cache {p['knsd_cached_s'] * 1000:.1f} ms)"
        "  goal <= 0.3"
    )
    window = args.overlap * r["step_s"]
    print(
        f"(2) uncached LoRA request / plain: exact {r['exact_ratio']:.3f}, overlap K={args.overlap} {r['overlap_ratio']:.3f}"
        f"  (load {r['load_s'] * 1000:.0f} ms of a {args.lora_mb} MB file, overlap window {window * 1000:.0f} ms,"
        f" patched at step {r['late_step']:.0f})  goal overlap <= 1.05 when load < window"
    )
    print(f"(3) overlap vs exact image: PSNR {r['psnr_db']:.1f} dB")
    print(
        f"(4) ControlNet (1 canny unit) / plain: {c['ratio']:.3f}  ({c['controlnet_s']:.3f} s vs {c['plain_s']:.3f} s)"
    )


if __name__ == "__main__":
    main()
