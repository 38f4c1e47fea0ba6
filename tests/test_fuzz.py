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
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import start_serve, wait_for
from tests.hostile import png_bomb

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


def _encoded(fmt: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 30, 200)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


# The shapes of the hostile-input report, drawn among the rest: bombs past Pillow's limit and past the
# server's, formats the API does not read, a cut-off file, prompts that were cubic to parse or carry
# non-finite numbers and other extra networks, and bodies JSON forbids or nests without end.
HOSTILE_IMAGES = st.sampled_from(
    [PNG, png_bomb(20000, 20000, rows=2), png_bomb(8000, 8000), _encoded("GIF"), _encoded("TIFF"), PNG[:200]]
)
HOSTILE_TEXT = st.sampled_from(
    [
        "[a:b:1] " * 200 + "(",
        "(" * 3000,
        "[" * 2000 + "a:b:0.5" + "]" * 2000,
        "(a " * 20000,
        "x <lora:x:nan>",
        "x <lora:x:inf>",
        "x <hypernet:h:1>",
        "[a:b:1e999]",
        "(a:nan)",
        "".join(f"<lora:n{i}:1>" for i in range(100)),
    ]
)
HOSTILE_RAW = st.sampled_from(
    [
        b'{"prompt": "x", "cfg_scale": NaN}',
        b'{"prompt": "x", "seed": Infinity}',
        b'{"prompt": "x", "denoising_strength": -Infinity}',
        b"[" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"[" + b"0," * 250_000 + b"0]",
    ]
)


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


def _with_image(body: Any, image: str = PNG) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    if "init_images" in out:
        out["init_images"] = [image]
    if "image" in out:
        out["image"] = image
    if "imageList" in out:
        out["imageList"] = [{"data": image, "name": "fuzz"}]
    if "mask" in out:
        out["mask"] = image
    if "controlnet_input_images" in out:
        out["controlnet_input_images"] = [image]
    return out


def _hostile(body: Any, image: str, text: str) -> Any:
    """`body` with the hostile image wherever an image goes and the hostile text in its prompts."""
    if not isinstance(body, dict):
        return body
    out = _with_image(body, image)
    for key in ("prompt", "negative_prompt", "hr_prompt"):
        if key in out or key == "prompt":
            out[key] = text
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
                hostile = st.builds(_hostile, valid, HOSTILE_IMAGES, HOSTILE_TEXT)
                bodies = st.one_of(valid, valid.map(_with_image), hostile, JSON.map(_cap))
                raw = (st.binary(max_size=64) | HOSTILE_RAW).map(
                    lambda b: {"content": b, "headers": {"Content-Type": "application/json"}}
                )
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


# Valid requests: fields are drawn only where the schema states what is valid (an enum, bounds or a
# default), free text from plain words; cost caps as above, but sides at 64 so a hires pass fits the budget.
VALID_CAPS = {**CAPS, "width": 64, "height": 64, "upscaling_resize_w": 64, "upscaling_resize_h": 64}
WORDS = st.lists(st.sampled_from(["a", "red", "cat", "on", "the", "moon", "dog", "blue"]), max_size=6)


def valid_from_schema(
    schema: dict[str, Any], names: dict[str, list[Any]], key: str = "", required: bool = False
) -> Any:
    """Values a careful client would send: within the schema's enum, bounds and defaults (None: leave out)."""
    if key in names:
        return st.sampled_from(names[key])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type")
    kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
    if kind == "object":
        return valid_object(schema, names)
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if kind in ("integer", "number") and lo is not None and hi is not None:
        step = schema.get("multipleOf", 1)
        ints = st.integers(math.ceil(lo / step), math.floor(hi / step)).map(lambda i: i * step)
        values = ints if kind == "integer" else st.floats(lo, hi) | ints
        return st.sampled_from([schema["default"]]) | values if "default" in schema else values
    if schema.get("default") == "" and kind == "string":  # free text: prompts
        return st.just("") | WORDS.map(" ".join)
    if "default" in schema:
        return st.just(schema["default"])
    if not required:  # nothing says what is valid: a careful client leaves it out
        return None
    if kind == "string":
        words = WORDS.filter(bool) if schema.get("minLength") or required else WORDS
        return st.just(PNG) if "base64" in schema.get("description", "") else words.map(" ".join)
    if kind == "array":
        items = schema.get("items", {})
        if "base64" in items.get("description", ""):
            return st.just([PNG])
        values = valid_from_schema(items, names, required=True)
        return st.lists(values, min_size=1, max_size=2) if values is not None else None
    return None


def valid_object(schema: dict[str, Any], names: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    required = set(schema.get("required", ()))
    fixed, optional = {}, {}
    for key, sub in schema.get("properties", {}).items():
        values = valid_from_schema(sub, names, key, key in required)
        if values is None:
            continue
        (fixed if key in required else optional)[key] = values
    return st.fixed_dictionaries(fixed, optional=optional)


# What a careful client sets on these routes when the server's defaults (512x512, 50 steps) would not fit
# this test server's pixel budget and time.
VALID_DEFAULTS = {
    "/sdapi/v1/txt2img": DEFAULTS,
    "/sdapi/v1/img2img": DEFAULTS,
    "/v1/images/generations": {"size": "64x64", "steps": 2},
    "/sdapi/v1/extra-single-image": {"upscaling_resize_w": 64, "upscaling_resize_h": 64},
    "/sdapi/v1/extra-batch-images": {"upscaling_resize_w": 64, "upscaling_resize_h": 64},
}


def _valid_cap(path: str) -> Callable[[Any], Any]:
    def cap(body: dict[str, Any]) -> dict[str, Any]:
        out = {**VALID_DEFAULTS.get(path, {}), **body}
        if "size" in out:  # OpenAI's "WxH": its default 512x512 is over this server's pixel budget
            out["size"] = "64x64"
        if path == "/controlnet/detect":  # maps come back at processor_res (-1: 512), within --max-pixels
            res = out.get("controlnet_processor_res")
            out["controlnet_processor_res"] = res if isinstance(res, int) and 0 < res <= 128 else 64
        for key, limit in VALID_CAPS.items():
            value = out.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
                out[key] = limit
        return out

    return cap


def test_schema_valid_requests_succeed(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Requests drawn within the documented schema mostly succeed: the fuzz test above would also pass a
    server that answers 422 to everything; this one would not."""
    get = partial(httpx.get, timeout=30)
    spec = get(server + "/openapi.json").json()
    names: dict[str, list[Any]] = {
        "sampler_name": [s["name"] for s in get(server + "/sdapi/v1/samplers").json()],
        "upscaler_1": [u["name"] for u in get(server + "/sdapi/v1/upscalers").json()],
        "upscaler_2": [u["name"] for u in get(server + "/sdapi/v1/upscalers").json()],
        "controlnet_module": get(server + "/controlnet/module_list").json()["module_list"],
    }
    if not get(server + "/sdapi/v1/face-restorers").json():  # face restoration needs a restorer installed
        names |= {"gfpgan_visibility": [0], "codeformer_visibility": [0]}
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is not None and "{" not in path:
                strategy = valid_object(content["schema"], names).map(_valid_cap(path))
                ops.append((method.upper(), path, strategy))
    assert len(ops) >= 8
    outcome: dict[str, Counter[int]] = {}
    refused: list[str] = []
    client = httpx.Client(base_url=server, timeout=120)

    # derandomize: the same draws every run, so the success rate is a property of the server, not of luck.
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=st.data())
    def run_one(method: str, path: str, strategy: st.SearchStrategy[Any], body: st.DataObject) -> None:
        r = client.request(method, path, **_json_body(body.draw(strategy)))
        outcome.setdefault(path, Counter())[r.status_code] += 1
        if r.status_code >= 300:
            refused.append(f"{path} -> {r.status_code} {r.text[:200]}")

    try:
        for method, path, strategy in ops:
            run_one(method, path, strategy)
    finally:
        client.close()
    ok = sum(n for c in outcome.values() for code, n in c.items() if code < 300)
    total = sum(sum(c.values()) for c in outcome.values())
    with capsys.disabled():
        print(f"\nvalid requests: {ok} of {total} succeeded; by route {outcome}")
        for line in refused[:8]:
            print("  refused", line)
    assert all(any(code < 300 for code in c) for c in outcome.values()), outcome
    assert ok >= 0.8 * total, refused[:10]
