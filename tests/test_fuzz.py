"""Fuzzing from the OpenAPI document: generated odd and bad requests against a real `knsd serve` process.

Every operation in /openapi.json gets bodies drawn from its request schema (`from_schema` below), arbitrary
JSON, raw bytes and, sometimes, a real image where the schema wants one. For a bounded time
(KNSD_FUZZ_SECONDS, default 60) no answer may be a 5xx or take longer than the client timeout, and the
server must still be ready afterwards. Expensive knobs (steps, batch, size) are capped so each case is quick;
out-of-range values below the caps still reach the server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import start_serve, wait_for

BUDGET = float(os.environ.get("KNSD_FUZZ_SECONDS", "60"))
# Upper caps on values that only cost time; smaller and invalid values pass through unchanged.
CAPS = {"steps": 3, "batch_size": 2, "n_iter": 2, "n": 2, "hr_second_pass_steps": 2, "hr_scale": 2}
CAPS |= {k: 128 for k in ("width", "height", "hr_resize_x", "hr_resize_y", "firstphase_width")}
CAPS |= {k: 128 for k in ("firstphase_height", "seed_resize_from_w", "seed_resize_from_h")}
CAPS |= {"upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128}
DEFAULTS = {"width": 64, "height": 64, "steps": 2}
# Any code point, lone UTF-16 surrogates included (JSON can carry them as \\udXXXX escapes).
TEXT = st.text(max_size=40) | st.text(st.characters(exclude_categories=()), max_size=8)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the JSON Schema subset knsd's document uses (type lists, properties, items, enum, bounds)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    kinds = schema.get("type")
    if kinds is None:
        return JSON
    if isinstance(kinds, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kinds])
    if kinds == "object":
        props = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kinds == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    if kinds in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        near = st.integers(-2, 10) | st.integers(-(2**63), 2**63)
        if kinds == "integer":
            return near | st.integers(min_value=lo, max_value=hi)
        floats = st.floats(min_value=lo, max_value=hi) if lo is not None or hi is not None else st.floats()
        return near | floats.filter(lambda f: f == f and abs(f) != float("inf"))
    return {"string": TEXT, "boolean": st.booleans(), "null": st.none()}[kinds]


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _png()


@pytest.fixture(scope="module")
def server(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    proc, url = start_serve(cache, "--max-pixels", str(128 * 128), "--max-body-mb", "2", log=log)
    try:
        wait_for(url + "/readyz", 180)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except Exception:
            proc.kill()
        tail = log.read_text(errors="replace")[-4000:]
        print(f"\n--- knsd serve log (tail) ---\n{tail}")


def _cap(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    out = {**{k: v for k, v in DEFAULTS.items() if k not in body}, **body}
    for key, cap in CAPS.items():
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
            out[key] = cap
    return out


def _with_image(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    if "init_images" in out:
        out["init_images"] = [PNG]
    if "image" in out:
        out["image"] = PNG
    if "imageList" in out:
        out["imageList"] = [{"data": PNG, "name": "fuzz"}]
    return out


def _json_body(body: Any) -> dict[str, Any]:
    """Request kwargs for a JSON body, written ASCII-only so lone surrogates travel as \\udXXXX escapes.

    httpx's own `json=` encodes the text as UTF-8, which raises on a lone surrogate before anything is sent.
    """
    content = json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def _under(prefix: str) -> Callable[[str], str]:
    return lambda text: prefix + quote(text, safe="")


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(method, path, strategy of request kwargs) for every operation in the document."""
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            path_s = st.just(path)
            if "{" in path:
                path_s = st.text(max_size=30).map(_under(path.split("{")[0]))
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                query = st.fixed_dictionaries(
                    {}, optional={"skip_current_image": st.sampled_from(["true", "x"])}
                )
                kwargs = st.builds(lambda q: {"params": q}, query)
            else:
                schema = content["schema"]
                valid = from_schema(schema).map(_cap)
                bodies = st.one_of(valid, valid.map(_with_image), JSON.map(_cap))
                raw = st.binary(max_size=64).map(lambda b: {"content": b})
                kwargs = st.one_of(bodies.map(_json_body), raw)
            ops.append((method.upper(), path, st.tuples(path_s, kwargs)))
    return ops


def test_fuzz_from_openapi(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = httpx.get(server + "/openapi.json", timeout=30).json()
    ops = _operations(spec)
    assert len(ops) >= 35
    statuses: Counter[int] = Counter()
    per_op: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    client = httpx.Client(base_url=server, timeout=120)

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method, template, strategy = data.draw(st.sampled_from(ops), label="operation")
        path, kwargs = data.draw(strategy, label="request")
        try:
            r = client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            failures.append(f"{method} {path}: no answer within 120 s for {str(kwargs)[:300]}")
            raise
        statuses[r.status_code] += 1
        per_op[f"{method} {template}"] += 1
        if r.status_code >= 500:
            failures.append(f"{method} {path} -> {r.status_code} {r.text[:300]} for {str(kwargs)[:300]}")
        assert r.status_code < 500, failures[-1]

    try:
        # Short Hypothesis runs (fresh random seeds) until the budget is spent: a time check inside one
        # run would make its data generation inconsistent.
        while time.monotonic() - started < BUDGET:
            run()
    finally:
        client.close()
        elapsed = time.monotonic() - started
        with capsys.disabled():
            print(
                f"\nfuzz: {sum(statuses.values())} requests over {len(per_op)} of {len(ops)} operations "
                f"in {elapsed:.0f} s; statuses {dict(sorted(statuses.items()))}"
            )
            for failure in failures[:5]:
                print("  FAIL", failure)
    ready = httpx.get(server + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert sum(statuses.values()) > len(ops)
