"""The start-up path of a single file: mapped weights, converted files kept for later starts, the hash and
the converted file off the start-up path, start-up phases, and a log with knsd's own lines only."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from knsd.bench.ldm import pipeline_to_ldm
from knsd.errors import ModelError
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from knsd.serve.models import converted
from knsd.serve.models.background import PendingConversion, save_unpatched
from knsd.serve.models.loader import load_model
from knsd.serve.models.weights import MappedSafetensors, write_safetensors
from knsd.serve.thirdparty import NOISE, quiet_third_party
from knsd.serve.timeline import Timeline, process_start
from tests.helpers import knsd_env, start_serve, wait_for

REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 3, "seed": 5}


def _pixels(model: Any) -> np.ndarray:
    return np.asarray(Engine(model).generate(parse_txt2img(REQUEST, 1 << 30)).images[0])


@pytest.fixture(scope="module")
def checkpoint(pristine_tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an original-layout single file, alone in a model volume."""
    path = tmp_path_factory.mktemp("volume") / "tiny-emaonly.safetensors"
    save_file(pipeline_to_ldm(pristine_tiny_model.txt2img), str(path))
    return path


def test_mapped_tensors_are_views_of_the_file(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.float16),
               "c": torch.tensor(7, dtype=torch.int64), "d": torch.zeros(0, 3, dtype=torch.bfloat16)}  # fmt: skip
    path = tmp_path / "w.safetensors"
    write_safetensors(path, tensors, {"k": "v"})
    assert load_file(str(path)).keys() == tensors.keys()  # a file the safetensors library reads too
    mapped = MappedSafetensors(path)
    mapped.populate()
    got = mapped.tensors()
    assert mapped.metadata == {"k": "v"}
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)
    base = torch.frombuffer(mapped._map, dtype=torch.uint8).data_ptr()
    assert base <= got["a"].data_ptr() < base + mapped.size  # no copy: the tensor lies in the map
    got["a"][0, 0] = 100.0  # copy-on-write: the process sees it, the file does not
    assert load_file(str(path))["a"][0, 0] == 0.0


def test_a_file_from_another_writer_with_odd_offsets_is_read(tmp_path: Path) -> None:
    path = tmp_path / "odd.safetensors"
    tensors = {"a": torch.ones(3, dtype=torch.uint8), "b": torch.arange(4, dtype=torch.float32)}
    header = json.dumps({"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                         "b": {"dtype": "F32", "shape": [4], "data_offsets": [3, 19]}}).encode()  # fmt: skip
    path.write_bytes(len(header).to_bytes(8, "little") + header + tensors["a"].numpy().tobytes()
                     + tensors["b"].numpy().tobytes())  # fmt: skip
    got = MappedSafetensors(path).tensors()
    assert torch.equal(got["b"], tensors["b"]) and torch.equal(got["a"], tensors["a"])


def _framed(header: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header


@pytest.mark.parametrize(
    "blob, message",
    [(b"\x01", "too short"), ((1 << 40).to_bytes(8, "little"), "header length"), (b"\x04\0\0\0\0\0\0\0{no}", "not JSON"),
     (_framed(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'), "outside the file")],
)  # fmt: skip
def test_a_broken_file_is_a_model_error(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ModelError, match=message):
        MappedSafetensors(path)


def test_converted_weights_are_kept_and_reused(
    pristine_tiny_model: Any, checkpoint: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "fresh-cache"  # no hashes.json: the hash comes from the converted file next time
    first = load_model(str(checkpoint), cache, device="cpu")
    assert first.loaded_from == "original" and first.after_ready is not None
    assert first.wait_hash(60) is not None
    kept = first.after_ready.saved
    assert kept is not None and kept.parent == checkpoint.parent / ".knsd"
    header = MappedSafetensors(kept)
    assert header.metadata["knsd.sha256"] == first.sha256 and header.metadata["knsd.dtype"] == "float32"
    assert {name.split(".")[0] for name in header.entries} == {"unet", "vae", "text_encoder"}
    again = load_model(str(checkpoint), tmp_path / "another-cache", device="cpu")
    assert again.loaded_from == "converted" and again.sha256 == first.sha256  # recorded in the converted file
    weight = again.denoiser.conv_in.weight
    assert header.size > 0 and weight.dtype == torch.float32
    assert np.array_equal(_pixels(again), _pixels(pristine_tiny_model))
    assert "build" in again.timeline.phases() and "convert" not in again.timeline.phases()


def test_a_changed_checkpoint_is_converted_again(
    pristine_tiny_model: Any, tmp_path: Path, cache: Path
) -> None:
    path = tmp_path / "model.safetensors"
    save_file(pipeline_to_ldm(pristine_tiny_model.txt2img), str(path))
    model = load_model(str(path), cache, device="cpu")
    model.wait_hash(60)
    old = model.after_ready.saved if model.after_ready else None
    assert old is not None and old.is_file()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # the volume was updated
    changed = load_model(str(path), cache, device="cpu")
    assert changed.loaded_from == "original"
    changed.wait_hash(60)
    new = changed.after_ready.saved if changed.after_ready else None
    assert new is not None and new != old and new.is_file() and not old.exists()  # the stale one is gone


def test_an_unwritable_model_folder_falls_back_to_the_cache(pristine_tiny_model: Any, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    path = volume / "model.safetensors"
    save_file(pipeline_to_ldm(pristine_tiny_model.txt2img), str(path))
    (volume / converted.BESIDE).write_text("not a folder")  # mkdir fails there, as on a read-only volume
    cache = tmp_path / "cache"
    model = load_model(str(path), cache, device="cpu")
    model.wait_hash(60)
    saved = model.after_ready.saved if model.after_ready else None
    assert saved is not None and saved.parent == cache / "converted"
    assert load_model(str(path), cache, device="cpu").loaded_from == "converted"


def test_no_converted_file_when_turned_off(checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = load_model(str(checkpoint), cache, device="cpu", converted_max_bytes=0)
    model.wait_hash(60)
    assert (
        model.loaded_from == "original" and model.after_ready is not None and model.after_ready.saved is None
    )


def test_the_cache_evicts_least_recently_used_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = cache / "converted"
    folder.mkdir(parents=True)
    for i, used in enumerate((100, 200, 300)):  # old0 used longest ago
        old = folder / f"old{i}{converted.SUFFIX}"
        old.write_bytes(b"\0" * 1000)
        os.utime(old, (1e9 + used, 1e9 + used))
    source = tmp_path / "ro" / "m.safetensors"
    source.parent.mkdir()
    source.write_bytes(b"x")
    (source.parent / converted.BESIDE).write_text("")  # not writable beside: the cache takes it
    ident = converted.Identity(source, 1, 0, "h", "float32", "cfg")
    saved = converted.save(ident, {"w": torch.zeros(250)}, {}, cache, max_bytes=2500)
    assert saved is not None and saved.parent == folder
    left = sorted(p.name for p in folder.glob(f"*{converted.SUFFIX}"))
    assert left == sorted(["old2" + converted.SUFFIX, saved.name])  # the two oldest went, the newest stayed
    assert converted.save(ident, {"w": torch.zeros(1000)}, {}, cache, max_bytes=2500) is None  # too big


def test_a_lora_merged_while_writing_discards_the_file(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    source.write_bytes(b"x")
    pending = PendingConversion(
        converted.Identity(source, 1, 0, "h", "float32", "c"), {"w": torch.ones(4)}, {}
    )
    states = iter(
        [(False, 0), (False, 1), (True, 1), (False, 1), (False, 1)]
    )  # merged during the first write
    saved = save_unpatched(pending, tmp_path / "cache", 1 << 20, lambda: next(states), retry_seconds=0)
    assert saved is not None and saved.is_file()
    assert len(list(saved.parent.glob(f"*{converted.SUFFIX}"))) == 1  # the first attempt was thrown away


def test_timeline_counts_from_process_start() -> None:
    origin = process_start()
    timeline = Timeline(origin)
    timeline.add("imports", 1.0, 2.0)
    timeline.add("read", 1.5, 1.7)
    timeline.add("imports", 3.0, 3.5)
    phases = timeline.phases()
    assert list(phases) == ["imports", "read"]
    assert (phases["imports"].seconds, phases["imports"].began, phases["imports"].ended) == (1.5, 1.0, 3.5)
    assert timeline.now() > 0  # this process started before the test ran


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_third_party_noise_is_dropped_at_its_source() -> None:
    quiet_third_party()
    kept = _Kept()
    loggers = [logging.getLogger(name) for name in [*NOISE, "knsd.serve"]]
    levels = [logger.level for logger in loggers]  # libraries set their own verbosity when loaded
    for logger in loggers:
        logger.addHandler(kept)
        logger.setLevel(logging.DEBUG)
    try:
        for name, needles in NOISE.items():
            logging.getLogger(name).warning("prefix %s suffix", needles[0])
            logging.getLogger(name).warning("something else from %s", name)
        logging.getLogger("knsd.serve").warning("knsd's own line")
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(kept)
            logger.setLevel(level)
    assert not any(n in m for m in kept.messages for needles in NOISE.values() for n in needles)
    others = [m for m in kept.messages if m.startswith("something else")]
    assert len(set(others)) == len(NOISE) and "knsd's own line" in kept.messages  # only the noise is dropped


def test_serve_skips_integrations_it_does_not_use() -> None:
    code = ("import importlib.util, sys; from knsd.serve.thirdparty import skip_unused; skip_unused(sys.argv[1]); "
            "import diffusers.models, transformers; "
            "print(sorted(m for m in ('torchao', 'peft') if sys.modules.get(m) is not None), "
            "importlib.util.find_spec('torchao') is None)")  # fmt: skip
    plain = subprocess.run([sys.executable, "-c", code, "none"], capture_output=True, text=True, check=True)
    assert plain.stdout.split() == ["[]", "True"]
    quantized = subprocess.run(
        [sys.executable, "-c", code, "int8"], capture_output=True, text=True, check=True
    )
    assert quantized.stdout.split()[-1] == "False"  # --quantize keeps torchao


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) knsd[.\w]*: ")


@pytest.mark.slow
def test_start_up_log_has_knsd_lines_only_and_phases(cache: Path, checkpoint: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc, url = start_serve(cache, "--model", str(checkpoint), log=log)
    try:
        wait_for(url + "/readyz", 120)
        metrics = httpx.get(url + "/metrics").text
        phases = dict(re.findall(r'knsd_startup_phase_end_seconds\{phase="([^"]+)"\} ([\d.e+-]+)', metrics))
        assert {"imports", "read", "build", "warm-up", "ready"} <= set(phases)
        assert 0 < float(phases["warm-up"]) <= float(phases["ready"])
        for _ in range(100):  # hashed after ready, on a background thread
            item = httpx.get(url + "/sdapi/v1/sd-models").json()[0]
            if item["sha256"]:
                break
            wait_for(url + "/healthz", 1)
        assert item["title"] == f"{checkpoint.name} [{item['sha256'][:10]}]"
    finally:
        proc.terminate()
        proc.wait(30)
    lines = log.read_text().splitlines()
    assert lines and all(LINE.match(line) for line in lines), "\n".join(lines)
    assert any("listening on http://127.0.0.1:" in line for line in lines)


def test_log_level_warning_keeps_info_out(cache: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc, url = start_serve(cache, "--log-level", "warning", log=log)
    try:
        wait_for(url + "/readyz", 120)
    finally:
        proc.terminate()
        proc.wait(30)
    assert " INFO " not in log.read_text()
    bad = subprocess.run([sys.executable, "-m", "knsd", "serve", "--log-level", "loud"], env=knsd_env(cache),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "--log-level" in bad.stderr


@pytest.mark.slow
def test_bench_cold_start_reports_both_starts_against_the_floor(
    cache: Path, checkpoint: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    model = volume / checkpoint.name
    model.write_bytes(checkpoint.read_bytes())  # its own folder: the converted file is kept beside it
    out = subprocess.run([sys.executable, "-m", "knsd", "bench", "--cold-start", "--model", str(model), "--rounds", "1",
                          "-o", "json"], env=knsd_env(cache), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: len(v) for k, v in report["seconds"].items()} == {"floor": 1, "later": 1, "first": 1}
    assert (
        "torch" not in report["floor_classes"] and "diffusers:UNet2DConditionModel" in report["floor_classes"]
    )
    assert "convert" in report["phases"]["first"] and "convert" not in report["phases"]["later"]
    for kind in ("later", "first"):
        assert report["ratio"][kind] == report["median_seconds"][kind] / report["median_seconds"]["floor"]
        assert report["phases"][kind]["ready"]["ended"] > report["phases"][kind]["warm-up"]["seconds"]
    assert list((volume / converted.BESIDE).glob(f"*{converted.SUFFIX}"))


def test_bench_cold_start_needs_a_safetensors_file(cache: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read")
    out = subprocess.run([sys.executable, "-m", "knsd", "bench", "--cold-start", "--model", str(ckpt)],
                         env=knsd_env(cache), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "--model" in out.stderr and ".safetensors" in out.stderr


def test_cast_in_runs_keeps_every_value(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 4).half(), "b": torch.randn(5).half(), "c": torch.arange(3),
               "d": torch.randn(2, 2).half(), "e": torch.randn(3), "f": torch.randn(7).half()}  # fmt: skip
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path))  # the safetensors library's own order and alignment
    mapped = MappedSafetensors(path)
    cast = mapped.cast(["a", "b", "c", "e", "f"], torch.float32, chunk_bytes=40)
    assert sorted(cast) == ["a", "b", "c", "e", "f"]
    for name, tensor in cast.items():
        assert tensor.shape == tensors[name].shape and torch.equal(tensor, tensors[name].to(tensor.dtype))
    assert (
        cast["c"].dtype == torch.int64
        and cast["e"].dtype == torch.float32
        and cast["a"].dtype == torch.float32
    )
    runs = {t.untyped_storage().data_ptr() for n, t in cast.items() if n in "abf"}
    assert 1 <= len(runs) < 3  # neighbours cast together, a run cut at 40 source bytes
