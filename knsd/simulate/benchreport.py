"""`knsd bench` results: the record, its text and JSON forms, and reading it back for `knsd simulate` (no torch)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from knsd.errors import UsageError

KIND = "knsd-bench"


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One benchmark: what was measured where, and the numbers."""

    model: str
    family: str
    device: str
    device_name: str
    dtype: str
    quantize: str
    width: int
    height: int
    steps: int
    load_seconds: float
    image_seconds: tuple[float, ...]  # one per measured generation (batch size 1), after warm-up
    peak_memory_bytes: int
    memory_kind: str  # "cuda max allocated" or "process max RSS"

    @property
    def seconds_per_image(self) -> float:
        return statistics.fmean(self.image_seconds)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds_per_image


def to_json(result: BenchResult) -> str:
    """The `-o json` document; `knsd simulate --service-time FILE.json` reads it."""
    body: dict[str, Any] = {"kind": KIND, **asdict(result)}
    body["image_seconds"] = list(result.image_seconds)
    body["seconds_per_image"] = result.seconds_per_image
    body["steps_per_second"] = result.steps_per_second
    body["seconds_per_image_stdev"] = (
        statistics.stdev(result.image_seconds) if len(result.image_seconds) > 1 else 0.0
    )
    return json.dumps(body, indent=2)


def to_text(result: BenchResult) -> str:
    """A short human summary."""
    gib = result.peak_memory_bytes / (1 << 30)
    quant = "" if result.quantize == "none" else f", {result.quantize} weights"
    return "\n".join(
        [
            f"knsd bench: {result.model} ({result.family}) on {result.device_name} ({result.dtype}{quant})",
            f"  load:            {result.load_seconds:.2f} s",
            f"  image:           {result.seconds_per_image:.3f} s per {result.width}x{result.height} image, "
            f"{result.steps} steps ({len(result.image_seconds)} runs)",
            f"  denoising:       {result.steps_per_second:.2f} steps/s",
            f"  peak memory:     {gib:.2f} GiB ({result.memory_kind})",
            "",
        ]
    )


def service_time_from_json(path: str, flag: str) -> tuple[str, float, float]:
    """A bench JSON as a service-time distribution: ("fixed", mean) or ("normal", mean, stdev)."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(flag, f"cannot read knsd bench JSON {path}: {exc}") from exc
    if not isinstance(body, dict) or body.get("kind") != KIND or "seconds_per_image" not in body:
        raise UsageError(flag, f"{path} is not the output of `knsd bench -o json`")
    mean, stdev = float(body["seconds_per_image"]), float(body.get("seconds_per_image_stdev") or 0.0)
    return ("normal", mean, stdev) if stdev > 0 else ("fixed", mean, 0.0)
