"""The handler's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from knsd.serve.timeline import Timeline

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, float("inf"))
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf"))


@dataclass(frozen=True, slots=True)
class ServeMetrics:
    """All the handler's metrics; `registry` is what `/metrics` exposes."""

    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    inflight: Gauge
    queue_depth: Gauge
    model_load: Gauge
    step_seconds: Histogram
    images: Counter
    ready: Gauge
    peak: Gauge
    warmup: Gauge
    # Add-ons (knsd/serve/addons): load and patch times, the LoRA RAM cache.
    addon_load_seconds: Histogram
    lora_patch_seconds: Histogram
    lora_cache_hits: Counter
    lora_cache_misses: Counter
    # Start-up phases (imports, read, convert, build, to device, warm-up, ready), knsd.serve.timeline
    startup_seconds: Gauge
    startup_end: Gauge

    def record_startup(self, timeline: Timeline) -> None:
        """Publish the start-up phases: seconds spent in each, and when each ended since process start."""
        for name, phase in timeline.phases().items():
            self.startup_seconds.labels(name).set(phase.seconds)
            self.startup_end.labels(name).set(phase.ended)


def create_metrics() -> ServeMetrics:
    """A fresh registry with knsd's handler metrics."""
    registry = CollectorRegistry(auto_describe=True)
    return ServeMetrics(
        registry=registry,
        requests=Counter(
            "knsd_requests_total", "HTTP requests by route and status", ["route", "status"], registry=registry
        ),
        duration=Histogram(
            "knsd_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        inflight=Gauge("knsd_inflight_requests", "Generations running now (0 or 1)", registry=registry),
        queue_depth=Gauge(
            "knsd_queue_depth", "Generation requests waiting for the pipeline", registry=registry
        ),
        model_load=Gauge("knsd_model_load_seconds", "Time taken to load the model", registry=registry),
        step_seconds=Histogram(
            "knsd_denoising_step_seconds", "Time per denoising step", buckets=STEP_BUCKETS, registry=registry
        ),
        images=Counter("knsd_images_generated_total", "Images generated", registry=registry),
        ready=Gauge("knsd_ready", "1 when the model is loaded, warm and not draining", registry=registry),
        warmup=Gauge("knsd_warmup_seconds", "Time taken by the warm-up generation", registry=registry),
        peak=Gauge(
            "knsd_peak_requests", "Most generation requests held at once since start", registry=registry
        ),
        addon_load_seconds=Histogram(
            "knsd_addon_load_seconds",
            "Time to read an add-on from disk (kind: lora, controlnet)",
            ["kind"],
            buckets=STEP_BUCKETS,
            registry=registry,
        ),
        lora_patch_seconds=Histogram(
            "knsd_lora_patch_seconds",
            "Time to merge LoRA deltas into the weights or restore them (op: patch, restore)",
            ["op"],
            buckets=STEP_BUCKETS,
            registry=registry,
        ),
        lora_cache_hits=Counter(
            "knsd_lora_cache_hits_total", "LoRAs found in the RAM cache", registry=registry
        ),
        lora_cache_misses=Counter(
            "knsd_lora_cache_misses_total", "LoRAs read from disk (not in the RAM cache)", registry=registry
        ),
        startup_seconds=Gauge(
            "knsd_startup_phase_seconds",
            "Seconds spent in each start-up phase (phases overlap: the file is read while imports run)",
            ["phase"],
            registry=registry,
        ),
        startup_end=Gauge(
            "knsd_startup_phase_end_seconds",
            "When each start-up phase ended, in seconds since the process started (phase ready: readiness)",
            ["phase"],
            registry=registry,
        ),
    )
