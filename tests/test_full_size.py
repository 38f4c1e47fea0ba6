"""A full-size SD 1.5 single file (random weights, fp16, original layout) served offline with no config.

This is the production path of the ACK/TKE guides: `v1-5-pruned-emaonly.safetensors` on a volume, no Hub.
Slow: builds and writes a 2.1 GB file, then loads 1.07 B parameters in a fresh `knsd serve`.
"""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from knsd.bench.checkpoint import write_random_checkpoint
from tests.helpers import knsd_env, start_serve, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_full_size_sd15_single_file_offline(tmp_path: Path) -> None:
    volume = tmp_path / "models"
    volume.mkdir()
    cache = tmp_path / "knsd-cache"  # a fresh knsd cache and an empty Hugging Face home: nothing cached
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    path = write_random_checkpoint(
        "sd15", volume / "v1-5-pruned-emaonly.safetensors", tmp_path / "build-cache"
    )
    assert 2.0e9 < path.stat().st_size < 2.3e9  # 1.066 B parameters in fp16
    os.environ["HF_HOME"], saved = str(hf_home), os.environ.get("HF_HOME")
    try:
        assert knsd_env(cache)["HF_HUB_OFFLINE"] == "1"
        proc, url = start_serve(cache, "--model", str(volume), log=tmp_path / "serve.log")
    finally:
        if saved is None:
            os.environ.pop("HF_HOME")
        else:
            os.environ["HF_HOME"] = saved
    try:
        wait_for(url + "/readyz", 600)
        body = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 1}
        r = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=600)
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (64, 64)
        deadline = time.monotonic() + 600  # A1111's sha256 is computed after ready, off the start-up path
        while not (item := httpx.get(url + "/sdapi/v1/sd-models").json()[0])["sha256"]:
            assert time.monotonic() < deadline, "the checkpoint was never hashed"
            time.sleep(1)
        assert item["title"].startswith("v1-5-pruned-emaonly.safetensors [") and len(item["sha256"]) == 64
        while not list((volume / ".knsd").glob("*.converted.safetensors")):  # kept for the next start
            assert time.monotonic() < deadline, "the converted weights were never kept"
            time.sleep(1)
        assert not any(hf_home.iterdir())  # nothing was fetched or cached
    finally:
        proc.kill()
        proc.wait(10)
