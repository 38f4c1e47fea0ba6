"""The KPA, replayed against Knative's own test vectors (a sample, in tests/data) and its rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knsd.knative.autoscaler import Autoscaler, DeciderSpec
from knsd.knative.config import AutoscalerConfig
from knsd.knative.scaler import PodAutoscalerState, ServerlessServiceState, active_condition, kpa_scale
from knsd.knative.target import decider_spec, initial_scale, panic_window, resolve_metric_target
from knsd.knative.windows import MaxWindow, TimedBuckets, WeightedBuckets

VECTORS = json.loads((Path(__file__).parent / "data" / "kpa_vectors_sample.json").read_text())


def _spec(s: dict) -> DeciderSpec:
    return DeciderSpec(
        scaling_metric=s["scaling_metric"],
        target_value=s["target_value"],
        total_value=s["total_value"],
        target_burst_capacity=s["target_burst_capacity"],
        panic_threshold=s["panic_threshold"],
        max_scale_up_rate=s["max_scale_up_rate"],
        max_scale_down_rate=s["max_scale_down_rate"],
        stable_window=s["stable_window_s"],
        scale_down_delay=s["scale_down_delay_s"],
        activation_scale=s["activation_scale"],
        reachable=s["reachable"],
    )


@pytest.mark.parametrize("case", VECTORS["autoscaler_scale_cases"], ids=lambda c: c["name"])
def test_scale_vectors(case: dict) -> None:
    steps = case["steps"]
    scaler = Autoscaler(_spec(case["spec"]), steps[0]["t"], case["init"]["ready_count_at_construction"])
    for step in steps:
        ready = None if step.get("ready_count_error") == "other" else step["ready_count"]
        stable = None if step.get("metric_error") else step["observed_stable"]
        result = scaler.scale(step["t"], ready, stable, step["observed_panic"])
        want = step["expect"]
        assert result.valid == want["valid"], step
        if want["valid"]:
            assert result.desired_pod_count == want["desired_pod_count"], step
            # Knative's tests compare EBC within +-1 (float rounding).
            assert abs(result.excess_burst_capacity - want["excess_burst_capacity"]) <= 1, step
        state = step.get("derived_state_after")
        if state:
            assert scaler.panicking == state["panicking"], step
            assert scaler.max_panic_pods == state["max_panic_pods"], step
            entries = state.get("delay_window_entries_(bucket_index,value)")
            if entries is not None and scaler.delay_window is not None:
                assert scaler.delay_window.entries() == [tuple(e) for e in entries]


@pytest.mark.parametrize(
    "case",
    VECTORS["resolve_metric_target_cases"]["cases"]
    + VECTORS["resolve_metric_target_cases"]["illustrations_with_shipped_defaults"],
    ids=lambda c: c["name"],
)
def test_resolve_metric_target(case: dict) -> None:
    cfg = case["config"]
    config = AutoscalerConfig(
        container_concurrency_target_fraction=cfg["container_concurrency_target_fraction"],
        container_concurrency_target_default=cfg["container_concurrency_target_default"],
        requests_per_second_target_default=cfg["rps_target_default"],
    )
    pa = case["pa"]
    annotations = {"autoscaling.knative.dev/metric": pa["metric"]}
    if pa["target_annotation"] is not None:
        annotations["autoscaling.knative.dev/target"] = str(pa["target_annotation"])
    if pa["target_utilization_percentage_annotation"] is not None:
        annotations["autoscaling.knative.dev/target-utilization-percentage"] = str(
            pa["target_utilization_percentage_annotation"]
        )
    got = resolve_metric_target(
        annotations, pa["container_concurrency"], config, cfg["rps_target_utilization"]
    )
    assert got.target == pytest.approx(case["expect"]["target"])
    assert got.total == pytest.approx(case["expect"]["total"])


@pytest.mark.parametrize("case", VECTORS["panic_window_cases"]["cases"], ids=lambda c: c["name"])
def test_panic_window(case: dict) -> None:
    config = AutoscalerConfig(
        stable_window=case["config_stable_window_s"],
        panic_window_percentage=case["config_panic_window_percentage"],
    )
    annotations = {}
    if case["window_annotation"]:
        annotations["autoscaling.knative.dev/window"] = case["window_annotation"]
    if case["panic_window_percentage_annotation"]:
        annotations["autoscaling.knative.dev/panic-window-percentage"] = case[
            "panic_window_percentage_annotation"
        ]
    assert panic_window(annotations, config) == case["expect"]["panic_window_s"]


@pytest.mark.parametrize("case", VECTORS["kpa_scaler_scale_to_zero_cases"]["cases"], ids=lambda c: c["label"])
def test_scale_to_zero_vectors(case: dict) -> None:
    cfg = case["config"]
    config = AutoscalerConfig(
        enable_scale_to_zero=cfg["enable_scale_to_zero"],
        stable_window=cfg["stable_window_s"],
        scale_to_zero_grace_period=cfg["scale_to_zero_grace_period_s"],
        scale_to_zero_pod_retention_period=cfg["scale_to_zero_pod_retention_period_s"],
        initial_scale=cfg["initial_scale"],
        allow_zero_initial_scale=cfg["allow_zero_initial_scale"],
        min_scale=cfg["min_scale"],
        max_scale=cfg["max_scale"],
        target_burst_capacity=cfg["target_burst_capacity"],
    )
    pa = case["pa"]
    state = PodAutoscalerState(
        active=pa["active_condition"],
        in_state_for=pa["in_state_for_s"],
        annotations=pa["annotations"],
        reachability=pa["reachability"],
        scale_target_initialized=pa["scale_target_initialized"],
    )
    sks = ServerlessServiceState(case["sks"]["mode"], case["sks"]["proxy_for_s"])
    decision = kpa_scale(
        case["desired_scale_in"],
        state,
        sks,
        config,
        activator_probe=case["activator_probe"] == "true",
        deployment_progress_deadline=cfg["progress_deadline_s"],
    )
    want = case["expect"]
    assert decision.scale == want["returned_scale"]
    assert decision.patches(case["deployment_replicas"]) == want["replicas_patched"]
    assert (decision.requeue_after is not None) == (want["requeue_callbacks"] > 0)
    assert int(decision.start_probe) == want["async_probes"]


# Rules beyond the sample.


def _scaler(**kw: float) -> Autoscaler:
    spec = DeciderSpec(target_value=1.0, total_value=1.0, target_burst_capacity=211, **kw)
    return Autoscaler(spec, 0.0, 0)


def test_cc1_shipped_defaults_give_two_pods_and_panic() -> None:
    spec = decider_spec({}, 1, AutoscalerConfig())
    assert spec.target_value == pytest.approx(0.7)
    scaler = Autoscaler(spec, 0, 1)
    result = scaler.scale(2, 1, 1.0, 1.0)
    assert result.desired_pod_count == 2 and scaler.panicking


def test_cc1_at_100_percent_one_pod_per_request() -> None:
    spec = decider_spec(
        {"autoscaling.knative.dev/target-utilization-percentage": "100"}, 1, AutoscalerConfig()
    )
    scaler = Autoscaler(spec, 0, 1)
    assert scaler.scale(2, 1, 1.0, 1.0).desired_pod_count == 1 and not scaler.panicking
    assert scaler.scale(4, 1, 3.0, 3.0).desired_pod_count == 3 and scaler.panicking  # 3/1 >= 2.0


def test_panic_never_scales_down_and_exits_after_a_full_window() -> None:
    scaler = _scaler(stable_window=60)
    assert scaler.scale(0, 1, 4.0, 4.0).desired_pod_count == 4
    assert scaler.scale(2, 4, 1.0, 1.0).desired_pod_count == 4  # panicking: hold
    assert scaler.scale(60, 4, 1.0, 1.0).desired_pod_count == 4  # panic_time + window == now: still in panic
    result = scaler.scale(61, 4, 1.0, 1.0)
    assert not scaler.panicking and result.desired_pod_count == 2  # stable decision, limited by max_down=4/2


def test_scale_down_rate_is_relative_to_ready_pods() -> None:
    scaler = _scaler(max_scale_down_rate=2.0)
    assert scaler.scale(0, 8, 0.0, 0.0).desired_pod_count == 4
    unreachable = Autoscaler(DeciderSpec(target_value=1.0, reachable=False), 0.0, 0)
    assert unreachable.scale(0, 8, 0.0, 0.0).desired_pod_count == 0


def test_activation_scale_only_with_traffic() -> None:
    scaler = _scaler(activation_scale=3)
    assert scaler.scale(0, 0, 0.0, 0.0).desired_pod_count == 0
    assert scaler.scale(2, 0, 0.5, 0.5).desired_pod_count == 3


def test_starts_in_panic_with_pods() -> None:
    scaler = Autoscaler(DeciderSpec(target_value=1.0), 10.0, 3)
    assert scaler.panic_time == 10.0 and scaler.max_panic_pods == 3
    assert Autoscaler(DeciderSpec(), 10.0, None).panic_time is None


def test_ebc_formula() -> None:
    scaler = Autoscaler(DeciderSpec(target_value=1.0, total_value=1.0, target_burst_capacity=211), 0, 0)
    assert scaler.scale(0, 3, 1.0, 2.0).excess_burst_capacity == 3 - 211 - 2
    minus = Autoscaler(DeciderSpec(target_value=1.0, target_burst_capacity=-1), 0, 0)
    assert minus.scale(0, 3, 1.0, 2.0).excess_burst_capacity == -1


def test_partial_window_average_after_cold_start() -> None:
    buckets = TimedBuckets(60)
    buckets.record(100.2, 3.0)
    assert buckets.window_average(100.9) == 3.0  # one second of data averages over one bucket, not 60
    buckets.record(101.5, 1.0)
    assert buckets.window_average(101.5) == 2.0
    # Seconds after the last write are not in the divisor while the window is partial...
    assert buckets.window_average(103.0) == 2.0
    # ...but a recorded zero (the scraper writes every second) is.
    buckets.record(102.0, 0.0)
    assert buckets.window_average(102.0) == pytest.approx(4.0 / 3)
    assert buckets.window_average(162.0) == 0.0 and not buckets.is_empty(162.0)
    assert buckets.is_empty(162.5 + 1)  # strictly more than a window since the last write


def test_buckets_sum_within_a_second_and_reset_after_a_gap() -> None:
    buckets = TimedBuckets(6)
    buckets.record(10.1, 1.0)
    buckets.record(10.7, 2.0)
    assert buckets.window_average(10.9) == 3.0
    buckets.record(30.0, 5.0)  # gap >= window: start over
    assert buckets.window_average(30.0) == 5.0
    buckets.record(20.0, 100.0)  # older than the window: ignored
    assert buckets.window_average(30.0) == 5.0


def test_weighted_exponential() -> None:
    buckets = WeightedBuckets(60)
    assert buckets.alpha == pytest.approx(0.2)
    buckets.record(0, 10.0)
    assert buckets.window_average(0) == pytest.approx(2.0)
    assert buckets.window_average(1) == pytest.approx(1.6)


def test_max_window() -> None:
    window = MaxWindow(10)  # 5 buckets of 2 s
    window.record(0, 5)
    window.record(4, 3)
    assert window.current() == 5
    window.record(10, 1)
    assert window.current() == 3 and window.entries() == [(2, 3), (5, 1)]


def test_initial_scale_and_active_condition() -> None:
    config = AutoscalerConfig()
    assert initial_scale({"autoscaling.knative.dev/initial-scale": "0"}, config) == 1  # zero not allowed
    allow = AutoscalerConfig(allow_zero_initial_scale=True)
    assert initial_scale({"autoscaling.knative.dev/initial-scale": "0"}, allow) == 0
    assert active_condition(0, 1, {}, config, True) == "inactive"
    assert active_condition(1, 0, {}, config, True) == "activating"
    assert (
        active_condition(2, 1, {"autoscaling.knative.dev/initial-scale": "2"}, config, False) == "activating"
    )
    assert active_condition(2, 2, {}, config, False) == "active"
