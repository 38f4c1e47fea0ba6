"""manifests/grafana-dashboard.json: valid, and every metric it queries is one that exists.

knsd's metrics are checked against a real scrape of `knsd serve`'s /metrics; Knative's against the names its
autoscaler and activator export (OpenCensus up to 1.18, OpenTelemetry from 1.19), derived from the metric
definitions extracted from knative/serving's Go source into tests/data/knative_metrics.json (see its README)
with each exporter's Prometheus naming rules.
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


def _opencensus_names(metric: dict[str, str]) -> set[str]:
    """OpenCensus' Prometheus exporter: `<component>_<view>`; a distribution adds _bucket, _sum, _count."""
    name = f"{metric['component']}_{metric['measure']}"
    if metric["aggregation"] == "distribution":
        return {name + "_bucket", name + "_sum", name + "_count"}
    return {name}


def _opentelemetry_names(metric: dict[str, str]) -> set[str]:
    """OpenTelemetry's Prometheus exporter (UnderscoreEscapingWithSuffixes): dots become underscores,
    `{annotation}` units are dropped, `s` adds `_seconds`, `/s` `_per_second`; monotonic counters get
    `_total`, histograms _bucket, _sum, _count."""
    name = metric["name"].replace(".", "_")
    unit = re.sub(r"\{[^}]*\}", "", metric["unit"])
    name += {"": "", "s": "_seconds", "/s": "_per_second"}[unit]
    instrument = metric["instrument"]
    if instrument.endswith("Histogram"):
        return {name + "_bucket", name + "_sum", name + "_count"}
    if instrument.endswith("Counter") and "UpDown" not in instrument:
        return {name + "_total"}
    return {name}


def knative_metric_names() -> set[str]:
    """Every Prometheus series name Knative's autoscaler and activator export, in both eras."""
    data = json.loads((REPO / "tests" / "data" / "knative_metrics.json").read_text())
    names: set[str] = set()
    for metric in data["opencensus"]["metrics"]:
        names |= _opencensus_names(metric)
    for metric in data["opentelemetry"]["metrics"]:
        names |= _opentelemetry_names(metric)
    return names


KNATIVE = knative_metric_names()
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


def test_knative_names_from_the_source() -> None:
    # Spot checks of the derivation against names Knative's own dashboards and docs use.
    assert {
        "autoscaler_desired_pods",
        "activator_request_latencies_bucket",
        "activator_request_count",
    } <= KNATIVE
    assert {"kn_revision_pods_desired", "kn_activator_stats_conn_errors_total"} <= KNATIVE
    assert "kn_revision_rps_stable_per_second" in KNATIVE


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
    knsd = {name for name in used if name.startswith("knsd_") and not name.startswith("knsd_gateway_")}
    gateway = {name for name in used if name.startswith("knsd_gateway_")}  # test_gateway_metrics checks these
    assert knsd >= {
        "knsd_requests_total", "knsd_request_duration_seconds_bucket", "knsd_queue_depth",
        "knsd_model_load_seconds", "knsd_denoising_step_seconds_bucket", "knsd_inflight_requests",
    }  # fmt: skip
    assert knsd - exported == set(), "the dashboard queries knsd metrics that knsd serve does not export"
    assert used - knsd - gateway - KNATIVE == set(), "unknown metrics (neither knsd's nor Knative's)"
    # Knative's side: pods desired and ready, panic mode and the activator, in both naming eras.
    assert {"autoscaler_desired_pods", "kn_revision_pods_desired", "autoscaler_panic_mode"} <= used
    assert {"activator_request_count", "autoscaler_actual_pods", "kn_revision_pods_count"} <= used
