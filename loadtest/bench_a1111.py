"""Benchmark of knsd's A1111 prompt handling and hires fix on the tiny model.

Prints, from one run, ratios measured side by side (interleaved, median of repeats):
  (1) conditioning of a 225-token weighted prompt (3 chunks, emphasis, a BREAK) / a plain 10-token prompt
      (knsd's own encoder: one CLIP call per 77-token chunk, so about 3 is the floor)
  (2) a txt2img request with hires fix / the two plain passes it is made of (a txt2img at the first-pass
      size + an img2img of the same steps at the hires size); the goal is <= 1.10 (upscaling and the
      conditioning of the second pass are the only extra work)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WEIGHTED_PARTS = ["(masterpiece:1.2)", "[blurry]", "((detailed eyes))", "red hair", "(sky:0.8)"]
PLAIN_WORDS = ["a", "cat", "on", "a", "red", "mat", "in", "the", "sun"]
FIRST = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 10, "seed": 1}
HIRES = {**FIRST, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_upscaler": "Latent"}


def _median_pair(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="interleaved pairs per ratio (median)")
    args = parser.parse_args()

    from knsd.serve.api.request import parse_img2img, parse_txt2img
    from knsd.serve.generate.engine import Engine
    from knsd.serve.models.loader import load_model
    from knsd.serve.prompts.conditioning import PromptOptions
    from knsd.serve.prompts.guidance import encode_schedule
    from knsd.serve.prompts.parser import parse_prompt_attention

    with tempfile.TemporaryDirectory(prefix="knsd-bench-a1111-") as tmp:
        engine = Engine(load_model("tiny", Path(tmp), device="cpu"))
        towers = engine.towers()
        assert towers is not None
        opts = PromptOptions()

        def count(prompt: str) -> int:
            # the model's CLIP tokens of the text, brackets and weights removed (what fills the chunks)
            return sum(
                len(t) for t in towers[0].tokenize([text for text, _ in parse_prompt_attention(prompt)])
            )

        parts: list[str] = []
        while count(", ".join(parts)) < 225:
            parts.append(WEIGHTED_PARTS[len(parts) % len(WEIGHTED_PARTS)])
        weighted_prompt = ", ".join(parts)
        words: list[str] = []
        while count(" ".join(words)) < 10:
            words.append(PLAIN_WORDS[len(words) % len(PLAIN_WORDS)])
        plain_prompt = " ".join(words)

        def weighted() -> None:
            encode_schedule(towers, weighted_prompt, 20, opts)

        def plain() -> None:
            encode_schedule(towers, plain_prompt, 20, opts)

        weighted()
        plain()
        tw, tp = _median_pair(weighted, plain, args.repeats * 3)
        print(
            f"(1) conditioning: {count(weighted_prompt)}-token weighted prompt {tw * 1000:.2f} ms / "
            f"{count(plain_prompt)}-token plain {tp * 1000:.2f} ms = {tw / tp:.2f}x (one CLIP call per 77-token chunk)"
        )

        hires = parse_txt2img(HIRES, 1 << 30)
        first = parse_txt2img(FIRST, 1 << 30)
        [image] = engine.generate(first).images
        # The second pass alone: img2img at the hires size running the same number of steps.
        assert hires.hires is not None
        w, h = hires.hires.output_size
        total = int(FIRST["steps"] / 0.5)
        body = {**FIRST, "width": w, "height": h, "steps": total, "denoising_strength": 0.5}
        second = parse_img2img({**body, "init_images": [_b64(image.resize((w, h)))]}, 1 << 30)

        def both_plain() -> None:
            engine.generate(first)
            engine.generate(second)

        def with_hires() -> None:
            engine.generate(hires)

        both_plain()
        with_hires()
        th, t2 = _median_pair(with_hires, both_plain, args.repeats)
        print(
            f"(2) hires fix {w}x{h}: {th * 1000:.0f} ms / two plain passes {t2 * 1000:.0f} ms = {th / t2:.3f}x "
            "(goal <= 1.10)"
        )


def _b64(image: object) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    main()
