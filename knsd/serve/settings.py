"""Server configuration: one frozen dataclass, built by the CLI, read by the app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from knsd.service.limits import MAX_BODY_BYTES

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float16", "bfloat16", "float32"]


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `knsd serve` is configured with."""

    model: str = "tiny"
    host: str = "0.0.0.0"
    port: int = 7860
    device: Device = "auto"
    dtype: DType = "auto"
    # queue-proxy holds 10 x containerConcurrency waiting requests per pod; do the same.
    max_queue: int = 10
    # Knative's terminationGracePeriodSeconds equals the revision timeout (300 s by default).
    drain_timeout: float = 300.0
    max_body_bytes: int = MAX_BODY_BYTES  # shared with the local route (knsd.service.limits)
    max_pixels: int = 1536 * 1536
    max_prompt_chars: int = 10_000  # per prompt field (knsd.serve.api.limits)
    max_extra_networks: int = 32  # <lora:...> and other tags per request
    # Input images, held to these from their headers before decoding (knsd.serve.api.images).
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 3 * 4096 * 4096
    max_images: int = 16
    # A streamed request gets a comment line after this many quiet seconds, well inside the idle timeouts
    # of proxies (nginx 60 s, cloud load balancers 60 s) and of a Knative revision (idleTimeoutSeconds).
    stream_keepalive: float = 15.0
    api_auth: tuple[tuple[str, str], ...] = ()
    api_token: str | None = None
    allowed_hosts: tuple[str, ...] = ()  # --allowed-hosts: Host headers served (empty: any)
    compile: bool = False
    warmup: bool = True
    model_config: Path | None = None
    cache: Path | None = None
    log_level: str = "info"
    port_file: Path | None = None  # where to write the bound port (useful with --port 0)
    quantize: str = "none"  # denoiser (and T5) weights: none, int8 or fp8 (knsd/serve/quantize.py)
    styles_files: tuple[Path, ...] = ()  # A1111 styles CSVs (--styles-file), read at start-up
    # Add-on folders (knsd/serve/addons); None: Lora/, ControlNet/, embeddings/ next to the model.
    lora_dir: Path | None = None
    controlnet_dir: Path | None = None
    controlnet_annotator_models_path: Path | None = None  # None: annotator/downloads/ beside ControlNet/
    embeddings_dir: Path | None = None
    lora_cache_mb: float = 1024.0  # parsed LoRA tensors kept in RAM (LRU)
    # Converted single-file weights kept for later starts (beside the model, else in the cache); 0: none.
    converted_max_bytes: int = 32 << 30
    lora_overlap_steps: int = 0  # SwiftDiffusion's hidden loading: an uncached LoRA may be <= K steps late
