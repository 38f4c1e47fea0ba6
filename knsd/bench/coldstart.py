"""`knsd bench --cold-start`: `knsd serve` from spawn to `/readyz` 200, against its floor, side by side.

The floor is what any server of the model must do: a fresh interpreter importing torch and the classes the
model's pipeline is made of (for SD 1.5: UNet2DConditionModel, AutoencoderKL, the scheduler, CLIPTextModel,
CLIPTokenizer), then reading the file's bytes. Both sides are whole processes timed the same way, by this
process, from `Popen` to an event: the floor printing its last line, the server answering `/readyz` 200.
Three kinds of process run in every round, in an order rotated each round (A B C, B C A, C A B, ...):
the floor, `knsd serve` on a later start (the converted weights kept by an earlier start are there) and
`knsd serve` on a first start (`--convert-cache-gb 0`: it converts, and keeps nothing). One round before
them, not counted, warms the page cache for all three. Medians are reported, with the server's phases
from its `/metrics` (`knsd_startup_phase_*`).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLOOR = """
import importlib, sys
import torch
for spec in sys.argv[2:]:
    library, name = spec.split(":")
    getattr(importlib.import_module(library), name)
with open(sys.argv[1], "rb") as fh:
    while fh.read(1 << 24):
        pass
print("done", flush=True)
"""
KINDS = ("floor", "later", "first")
LABELS = {
    "floor": "floor: import torch + the pipeline's classes, read the file",
    "later": "knsd serve, a later start (converted weights kept)",
    "first": "knsd serve, a first start (converts, --convert-cache-gb 0)",
}
GOAL = 1.3


@dataclass(frozen=True, slots=True)
class ColdStartSpec:
    """What to measure: the checkpoint, the rounds, the device flags passed to `knsd serve`."""

    model: Path
    rounds: int
    cache: Path
    device: str = "auto"
    dtype: str = "auto"
    timeout: float = 900.0


@dataclass(slots=True)
class ColdStartResult:
    """Seconds from spawn per kind and round, and the servers' phases."""

    spec: ColdStartSpec
    classes: list[str]
    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    phases: dict[str, list[dict[str, list[float]]]] = field(
        default_factory=lambda: {"later": [], "first": []}
    )

    def median(self, kind: str) -> float:
        return statistics.median(self.seconds[kind])

    def ratio(self, kind: str) -> float:
        """Median of the server's time over the median floor."""
        return self.median(kind) / self.median("floor")

    def pair_ratio(self, kind: str) -> float:
        """Median of the per-round ratios (each server run over the floor of its own round)."""
        pairs = zip(self.seconds[kind], self.seconds["floor"], strict=True)
        return statistics.median(s / f for s, f in pairs)

    def phase_medians(self, kind: str) -> dict[str, tuple[float, float]]:
        """Per phase: median seconds spent in it and median moment it ended (since spawn)."""
        names: list[str] = []
        for run in self.phases[kind]:
            names += [n for n in run if n not in names]
        out = {}
        for name in names:
            runs = [r[name] for r in self.phases[kind] if name in r]
            out[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        return out


def _env(spec: ColdStartSpec) -> dict[str, str]:
    return {**os.environ, "KNSD_CACHE": str(spec.cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def pipeline_classes(model: Path, cache: Path) -> list[str]:
    """`library:Class` of every component class the model's pipeline is built from (the floor imports them)."""
    from knsd.serve.models.families.detect import detect, read_shapes
    from knsd.serve.models.families.pipelines import config_for

    config = config_for(detect(model, read_shapes(model)), cache)
    index = json.loads((config / "model_index.json").read_text())
    return sorted(
        {
            f"{v[0]}:{v[1]}"
            for v in index.values()
            if isinstance(v, list) and v[0] in ("diffusers", "transformers")
        }
    )


def _floor(spec: ColdStartSpec, classes: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(spec.model), *classes], env=_env(spec),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    seconds = time.perf_counter() - started
    proc.wait(60)
    if line.strip() != "done":
        raise RuntimeError(f"the floor process failed (exit {proc.returncode})")
    return seconds


PHASE = re.compile(r'knsd_startup_phase_(seconds|end_seconds)\{phase="([^"]+)"\} (\S+)')


def _phases(metrics: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for kind, name, value in PHASE.findall(metrics):
        out.setdefault(name, [0.0, 0.0])[0 if kind == "seconds" else 1] = float(value)
    return out


def serve_once(
    spec: ColdStartSpec, extra: list[str], after: Callable[[str], None] | None = None
) -> tuple[float, dict[str, list[float]]]:
    """Spawn `knsd serve` on the model, time it to `/readyz` 200, read its phases, stop it."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="knsd-coldstart-") as tmp:
        port_file = Path(tmp) / "port"
        args = ["serve", "--model", str(spec.model), "--host", "127.0.0.1", "--port", "0", "--port-file",
                str(port_file), "--log-level", "warning", "--device", spec.device, "--dtype", spec.dtype, *extra]  # fmt: skip
        log = Path(tmp) / "serve.log"
        started = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "knsd", *args], env=_env(spec), stdout=out, stderr=out
            )
        try:
            url = None
            with httpx.Client(timeout=10) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"knsd serve exited ({proc.returncode}): {log.read_text()[-2000:]}"
                        )
                    if time.perf_counter() - started > spec.timeout:
                        raise RuntimeError(f"knsd serve not ready after {spec.timeout:.0f}s")
                    if url is None and port_file.is_file():
                        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
                    if url is not None:
                        try:
                            if client.get(url + "/readyz").status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                    time.sleep(0.01)
                seconds = time.perf_counter() - started
                phases = _phases(client.get(url + "/metrics").text)
            if after is not None:
                after(url)
            return seconds, phases
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _kept_files(spec: ColdStartSpec) -> list[Path]:
    from knsd.serve.models import converted

    return [
        p
        for folder in converted.locations(spec.model, spec.cache)
        for p in folder.glob(f"*{converted.SUFFIX}")
    ]


def keep_converted(spec: ColdStartSpec, progress: Callable[[str], None]) -> None:
    """Start the server once and wait until it has kept the converted weights (written after ready)."""
    before = {p: p.stat().st_mtime for p in _kept_files(spec)}

    def wait(url: str) -> None:
        deadline = time.monotonic() + spec.timeout
        while time.monotonic() < deadline:
            if any(before.get(p) != p.stat().st_mtime for p in _kept_files(spec)):
                return
            time.sleep(1)
        raise RuntimeError("the server did not keep the converted weights in time")

    _, phases = serve_once(spec, [])
    if "convert" in phases:  # it converted: its converted file is written after ready
        progress("writing the converted weights")
        serve_once(spec, [], wait)


def ensure_checkpoint(path: Path, variant: str, cache: Path, progress: Callable[[str], None]) -> Path:
    """The benchmark's random-weights single file, written (in a child process: ~7 GB) if missing."""
    if path.is_file():
        return path
    progress(f"writing {path} (random weights, original layout, fp16)")
    code = ("import sys; from pathlib import Path; from knsd.bench.checkpoint import write_random_checkpoint; "
            "write_random_checkpoint(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, variant, str(path), str(cache)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)  # fmt: skip
    return path


def run_cold_start(spec: ColdStartSpec, progress: Callable[[str], None] = lambda _: None) -> ColdStartResult:
    """Warm-up round (not counted), then `spec.rounds` rounds of floor / later / first, rotated."""
    classes = pipeline_classes(spec.model, spec.cache)
    result = ColdStartResult(spec, classes)
    keep_converted(spec, progress)
    for number in range(spec.rounds + 1):
        order = KINDS[number % 3 :] + KINDS[: number % 3]
        progress(f"round {number}/{spec.rounds}" if number else "warming the page cache (not counted)")
        for kind in order:
            phases: dict[str, list[float]] = {}
            if kind == "floor":
                seconds = _floor(spec, classes)
            else:
                seconds, phases = serve_once(spec, ["--convert-cache-gb", "0"] if kind == "first" else [])
                converted = "convert" in phases
                if converted != (kind == "first"):
                    raise RuntimeError(f"the {kind} start {'converted' if converted else 'did not convert'}")
            if number:
                result.seconds[kind].append(seconds)
                if kind != "floor":
                    result.phases[kind].append(phases)
    return result


PHASE_ORDER = ("imports", "read", "cuda init", "convert", "build", "to device", "warm-up", "ready")


def to_text(result: ColdStartResult) -> str:
    spec = result.spec
    size = spec.model.stat().st_size / 1e9
    lines = [
        f"knsd cold start: {spec.model.name} ({size:.2f} GB), --device {spec.device} --dtype {spec.dtype}",
        "  method: whole processes timed by the bench from spawn (Popen) to the floor's last line / /readyz 200;",
        f"  {spec.rounds} rounds of floor, later start, first start in an order rotated each round, after one",
        "  uncounted round that warms the page cache; medians (and the median of per-round ratios)",
        f"  floor imports: torch, {', '.join(c.split(':')[1] for c in result.classes)}",
    ]
    floor = result.median("floor")
    lines.append(f"  {LABELS['floor']:60s} {floor:6.2f} s")
    for kind in ("later", "first"):
        lines.append(
            f"  {LABELS[kind]:60s} {result.median(kind):6.2f} s = {result.ratio(kind):.2f} x floor"
            f" (per round {result.pair_ratio(kind):.2f})" + (f"   goal <= {GOAL}" if kind == "later" else "")
        )
    for kind in ("later", "first"):
        phases = result.phase_medians(kind)
        parts = [
            f"{n} {phases[n][0]:.2f} s (ends {phases[n][1]:.2f})"
            for n in PHASE_ORDER
            if n in phases and n != "ready"
        ]
        lines.append(f"  phases, {kind} start (seconds spent, ends at since spawn): " + ", ".join(parts))
        if "ready" in phases:
            lines.append(f"    ready {phases['ready'][1]:.2f} s after spawn (the server's own clock)")
    return "\n".join(lines) + "\n"


def to_json(result: ColdStartResult) -> str:
    spec = result.spec
    body: dict[str, Any] = {
        "model": str(spec.model),
        "bytes": spec.model.stat().st_size,
        "device": spec.device,
        "dtype": spec.dtype,
        "rounds": spec.rounds,
        "method": "whole processes, spawn to the floor's last line / /readyz 200, rotated order, medians",
        "floor_classes": result.classes,
        "seconds": result.seconds,
        "median_seconds": {k: result.median(k) for k in KINDS},
        "ratio": {k: result.ratio(k) for k in ("later", "first")},
        "pair_ratio": {k: result.pair_ratio(k) for k in ("later", "first")},
        "phases": {
            k: {n: {"seconds": s, "ended": e} for n, (s, e) in result.phase_medians(k).items()}
            for k in ("later", "first")
        },  # fmt: skip
        "goal": GOAL,
    }
    return json.dumps(body, indent=2)
