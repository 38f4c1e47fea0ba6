"""Annotation validation, replayed against Knative's own test cases (a sample) and its wording."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from knsd.knative.validation import AutoscalerConfig, validate_annotations

SAMPLE = json.loads((Path(__file__).parent / "data" / "annotation_validation_sample.json").read_text())
K = "autoscaling.knative.dev/"


def _config(case: dict) -> AutoscalerConfig:
    base = SAMPLE["_meta"]["default_config_in_test"]
    return replace(AutoscalerConfig(), **{**base, **case.get("config_override", {})})


@pytest.mark.parametrize("case", SAMPLE["test_cases"], ids=lambda c: c["name"])
def test_upstream_cases(case: dict) -> None:
    assert validate_annotations(case["annotations"], _config(case)) == case["expect_error"]


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {K + "min-scale": "2147483648"},
            "expected 0 <= 2147483648 <= 2147483647: autoscaling.knative.dev/min-scale",
        ),
        ({K + "minScale": "-1"}, "expected 0 <= -1 <= 2147483647: autoscaling.knative.dev/minScale"),
        ({K + "max-scale": "bar"}, "invalid value: bar: autoscaling.knative.dev/max-scale"),
        (
            {K + "activation-scale": "1"},
            "activation-scale=1 must be greater than 1: autoscaling.knative.dev/activation-scale",
        ),
        (
            {K + "min-scale": "3", K + "activation-scale": "2"},
            "min-scale=3 is greater than activation-scale=2: autoscaling.knative.dev/activation-scale",
        ),
        (
            {K + "initial-scale": "0"},
            "invalid value: 0: autoscaling.knative.dev/initial-scale=0 not allowed by cluster",
        ),
        (
            {K + "initial-scale": "-1"},
            "invalid value: -1: autoscaling.knative.dev/initial-scale must be greater than 0",
        ),
        ({K + "target": "0"}, "target 0 should be at least 0.01: autoscaling.knative.dev/target"),
        (
            {K + "target-utilization-percentage": "101"},
            "expected 1 <= 101 <= 100: autoscaling.knative.dev/target-utilization-percentage",
        ),
        ({K + "window": "1s"}, "expected 6s <= 1s <= 1h0m0s: autoscaling.knative.dev/window"),
        (
            {K + "window": "1m9s82ms"},
            "must be specified with at most second precision: autoscaling.knative.dev/window",
        ),
        ({K + "window": "abc"}, "invalid value: abc: autoscaling.knative.dev/window"),
        (
            {K + "panic-threshold-percentage": "1001"},
            "expected 110 <= 1001 <= 1000: autoscaling.knative.dev/panic-threshold-percentage",
        ),
        (
            {K + "target-burst-capacity": "-2"},
            "invalid value: -2: autoscaling.knative.dev/target-burst-capacity",
        ),
        ({K + "target-burst-capacity": "-1"}, ""),
        (
            {K + "scale-down-delay": "42.5s"},
            "must be specified with at most second precision: autoscaling.knative.dev/scale-down-delay",
        ),
        (
            {K + "scale-down-delay": "61m"},
            "expected 0s <= 61m <= 1h0m0s: autoscaling.knative.dev/scale-down-delay",
        ),
        (
            {K + "scale-to-zero-pod-retention-period": "61m"},
            "expected 0s <= 61m <= 1h0m0s: autoscaling.knative.dev/scale-to-zero-pod-retention-period",
        ),
        ({K + "metric": "cpu"}, "invalid value: cpu: autoscaling.knative.dev/metric"),
        (
            {K + "class": "hpa.autoscaling.knative.dev", K + "metric": ""},
            "invalid value: : autoscaling.knative.dev/metric",
        ),
        ({K + "class": "foo.knative.dev"}, "invalid value: foo.knative.dev: autoscaling.knative.dev/class"),
        (
            {K + "metric-aggregation-algorithm": "random"},
            "",
        ),  # not validated unless the class is explicitly KPA
        ({K + "unknown-key": "whatever"}, ""),
        ({K + "min-scale": " 1"}, "invalid value:  1: autoscaling.knative.dev/min-scale"),
        ({K + "target": "1_0"}, "invalid value: 1_0: autoscaling.knative.dev/target"),
    ],
)
def test_rules(annotations: dict, expected: str) -> None:
    assert validate_annotations(annotations) == expected


def test_several_errors_sorted_one_per_line() -> None:
    got = validate_annotations(
        {K + "min-scale": "foo", K + "max-scale": "bar", K + "window": "1s", K + "target": "0"}
    )
    assert got.split("\n") == [
        "expected 6s <= 1s <= 1h0m0s: autoscaling.knative.dev/window",
        "invalid value: bar: autoscaling.knative.dev/max-scale",
        "invalid value: foo: autoscaling.knative.dev/min-scale",
        "target 0 should be at least 0.01: autoscaling.knative.dev/target",
    ]


def test_same_message_merges_paths() -> None:
    got = validate_annotations({K + "min-scale": "x", K + "max-scale": "x"})
    assert got == "invalid value: x: autoscaling.knative.dev/max-scale, autoscaling.knative.dev/min-scale"


def test_max_scale_limit() -> None:
    config = AutoscalerConfig(max_scale_limit=10, max_scale=5)
    assert validate_annotations({K + "max-scale": "0"}, config) == (
        "max-scale=0 (unlimited), must be less than 10: autoscaling.knative.dev/max-scale"
    )
    assert validate_annotations(None, config) == ""
