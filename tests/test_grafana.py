"""manifests/grafana-dashboard.json: valid, and every metric it queries is one that exists.

knsd's metrics are checked against a real scrape of `knsd serve`'s /metrics; Knative's against the names its
autoscaler and activator export (OpenCensus up to 1.18, OpenTelemetry from 1.19), as listed in
../shared/docs/knative/traffic.md section 8.2 (read from knative/serving's metrics.go files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import REPO, running

DASHBOARD = REPO / "manifests" / "grafana-dashboard.json"
KNATIVE = {
    "autoscaler_desired_pods", "autoscaler_requested_pods", "autoscaler_actual_pods",
    "autoscaler_not_ready_pods", "autoscaler_pending_pods", "autoscaler_terminating_pods",
    "autoscaler_panic_mode", "autoscaler_stable_request_concurrency", "autoscaler_panic_request_concurrency",
    "autoscaler_target_concurrency_per_pod", "autoscaler_excess_burst_capacity",
    "activator_request_count", "activator_request_latencies_bucket", "activator_request_concurrency",
    "kn_revision_pods_desired", "kn_revision_pods_requested", "kn_revision_pods_count",
    "kn_revision_pods_not_ready_count", "kn_revision_pods_pending_count", "kn_revision_pods_terminating_count",
    "kn_revision_panic_mode", "kn_revision_concurrency_stable", "kn_revision_concurrency_panic",
    "kn_revision_concurrency_target", "kn_revision_request_concurrency",
}  # fmt: skip
# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL = {
    "sum", "max", "min", "avg", "by", "without", "rate", "irate", "increase", "histogram_quantile", "or",
    "and", "unless", "on", "ignoring", "le", "count", "abs", "clamp_min", "clamp_max",
}  # fmt: skip
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exprs(panels: list[dict[str, Any]]) -> Iterator[str]:
    for panel in panels:
        yield from exprs(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield target["expr"]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers, strings and ranges."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", bare)  # grouping labels
    return {name for name in IDENT.findall(bare) if name not in PROMQL and not name[0].isdigit()}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exported(tiny_model: Any, cache: Path) -> set[str]:
    """Every series name `knsd serve` exports, from a real scrape after one generation."""
    app = create_app(ServeSettings(cache=cache), model=tiny_model)
    with running(app, "/readyz") as url:
        httpx.post(
            url + "/sdapi/v1/txt2img",
            json={"prompt": "x", "width": 64, "height": 64, "steps": 2},
            timeout=120,
        )
        text = httpx.get(url + "/metrics").text
    names = {line.split()[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    return names


def test_metric_names_parser() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(knsd_x_bucket{pod=~"a-.*", le!="1"}[5m]))) or max(y)'
    assert metric_names(expr) == {"knsd_x_bucket", "y"}


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "service"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_every_metric_the_dashboard_uses_exists(dashboard: dict[str, Any], exported: set[str]) -> None:
    used = set().union(*(metric_names(e) for e in exprs(dashboard["panels"])))
    knsd = {name for name in used if name.startswith("knsd_")}
    assert knsd >= {
        "knsd_requests_total", "knsd_request_duration_seconds_bucket", "knsd_queue_depth",
        "knsd_model_load_seconds", "knsd_denoising_step_seconds_bucket", "knsd_inflight_requests",
    }  # fmt: skip
    assert knsd - exported == set(), "the dashboard queries knsd metrics that knsd serve does not export"
    assert used - knsd - KNATIVE == set(), "unknown metrics (neither knsd's nor Knative's)"
    # Knative's side: pods desired and ready, panic mode and the activator, in both naming eras.
    assert {"autoscaler_desired_pods", "kn_revision_pods_desired", "autoscaler_panic_mode"} <= used
    assert {"activator_request_count", "autoscaler_actual_pods", "kn_revision_pods_count"} <= used
