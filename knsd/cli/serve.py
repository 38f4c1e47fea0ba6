"""`knsd serve`."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path

import typer

from knsd.errors import KnsdError
from knsd.service.limits import MAX_BODY_MB


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DTypeChoice(StrEnum):
    auto = "auto"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class QuantizeChoice(StrEnum):
    none = "none"
    int8 = "int8"
    fp8 = "fp8"


def _parse_auth(value: str | None) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    pairs = []
    for item in value.split(","):
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise typer.BadParameter("expected user:pass[,user2:pass2]", param_hint="--api-auth")
        pairs.append((user, password))
    return tuple(pairs)


def serve(
    model: str = typer.Option(
        os.environ.get("KNSD_MODEL", "tiny"),
        "--model",
        help="'tiny', 'tiny-sdxl', 'tiny-sd3' or 'tiny-inpaint' (embedded models), a diffusers folder or a "
        ".safetensors/.ckpt file of SD 1.x, 2.x, SDXL or SD 3.5 (inpainting ones too). Env: KNSD_MODEL.",
    ),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    port_file: Path | None = typer.Option(
        None, "--port-file", help="Write the bound port here once listening."
    ),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help="auto picks CUDA when present."),
    dtype: DTypeChoice = typer.Option(
        DTypeChoice.auto, "--dtype", help="auto: float16 on CUDA, float32 on CPU."
    ),
    max_queue: int = typer.Option(
        10, "--max-queue", min=0, max=10000, help="Requests waiting behind the running one; more get 503."
    ),
    drain_timeout: float = typer.Option(
        300.0, "--drain-timeout", min=0.0, help="Seconds to finish work after SIGTERM."
    ),
    max_body_mb: float = typer.Option(
        float(MAX_BODY_MB), "--max-body-mb", min=0.001, help="Largest request body in MiB (413 above)."
    ),
    max_pixels: int = typer.Option(
        1536 * 1536, "--max-pixels", min=64 * 64, help="Largest width x height (422 above)."
    ),
    max_prompt_chars: int = typer.Option(
        10_000,
        "--max-prompt-chars",
        min=1,
        help="Longest prompt (each prompt field), characters (422 above).",
    ),
    max_extra_networks: int = typer.Option(
        32, "--max-extra-networks", min=0, help="Most <lora:...> and other extra-network tags per request."
    ),
    max_image_pixels: int = typer.Option(
        4096 * 4096,
        "--max-image-pixels",
        min=64 * 64,
        help="Largest input image, decoded pixels, read from its header before decoding (422 above).",
    ),
    max_request_pixels: int = typer.Option(
        3 * 4096 * 4096,
        "--max-request-pixels",
        min=64 * 64,
        help="Decoded pixels of all the input images of one request (422 above).",
    ),
    max_images: int = typer.Option(
        16, "--max-images", min=1, help="Most input images in one request (init images, masks, units...)."
    ),
    stream_keepalive: float = typer.Option(
        15.0,
        "--stream-keepalive",
        min=0.1,
        max=3600.0,
        help="Seconds of silence after which a streamed request gets a keep-alive comment.",
    ),
    api_auth: str | None = typer.Option(
        None, "--api-auth", envvar="KNSD_API_AUTH", help="HTTP Basic credentials user:pass[,user:pass]."
    ),
    api_token: str | None = typer.Option(
        None, "--api-token", envvar="KNSD_API_TOKEN", help="Bearer token accepted as auth."
    ),
    allowed_hosts: str | None = typer.Option(
        None,
        "--allowed-hosts",
        envvar="KNSD_ALLOWED_HOSTS",
        help="Host headers served, comma-separated (*.example.com: subdomains); others get 400. Default: any.",
    ),
    model_config: Path | None = typer.Option(
        None, "--model-config", help="Diffusers config folder for a single-file checkpoint."
    ),
    compile_unet: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the UNet (CUDA)."),
    warmup: bool = typer.Option(
        True, "--warmup/--no-warmup", help="Run one generation before reporting ready."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.info, "--log-level", help="knsd's log level: debug, info, warning or error."
    ),
    quantize: QuantizeChoice = typer.Option(
        QuantizeChoice.none,
        "--quantize",
        envvar="KNSD_QUANTIZE",
        help="Denoiser (and SD 3.5 T5) weights: int8 (CPU or any GPU) or fp8 (CUDA compute capability >= 8.9).",
    ),
    styles_file: list[Path] = typer.Option(
        [], "--styles-file", help="A1111 styles CSV (name,prompt,negative_prompt); repeatable."
    ),
    lora_dir: Path | None = typer.Option(
        None, "--lora-dir", envvar="KNSD_LORA_DIR", help="LoRA files (default: Lora/ next to the model)."
    ),
    controlnet_dir: Path | None = typer.Option(
        None,
        "--controlnet-dir",
        envvar="KNSD_CONTROLNET_DIR",
        help="ControlNet models (default: ControlNet/ next to the model).",
    ),
    controlnet_annotator_models_path: Path | None = typer.Option(
        None,
        "--controlnet-annotator-models-path",
        envvar="KNSD_CONTROLNET_ANNOTATOR_MODELS_PATH",
        help="Weights of ControlNet preprocessors, in the extension's layout <dir>/<annotator>/<file> "
        "(default: annotator/downloads/ next to the model).",
    ),
    embeddings_dir: Path | None = typer.Option(
        None,
        "--embeddings-dir",
        envvar="KNSD_EMBEDDINGS_DIR",
        help="Textual-inversion embeddings (default: embeddings/ next to the model).",
    ),
    lora_cache_mb: float = typer.Option(
        1024.0, "--lora-cache-mb", min=0.0, help="RAM for parsed LoRA tensors (LRU cache), MiB."
    ),
    convert_cache_gb: float = typer.Option(
        32.0,
        "--convert-cache-gb",
        min=0.0,
        help="Disk for converted single-file weights (beside the model, else in the cache), GB; 0: off.",
    ),
    lora_overlap_steps: int = typer.Option(
        0,
        "--lora-overlap-steps",
        min=0,
        max=150,
        help="Load an uncached LoRA while the first K steps run without it (0: A1111's exact semantics).",
    ),
) -> None:
    """Serve a Stable Diffusion model over A1111's and OpenAI's HTTP APIs, one request at a time."""
    from knsd.serve.settings import ServeSettings
    from knsd.serve.timeline import Timeline

    timeline = Timeline()

    settings = ServeSettings(
        model=model,
        host=host,
        port=port,
        device=device.value,
        dtype=dtype.value,
        max_queue=max_queue,
        drain_timeout=drain_timeout,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_prompt_chars=max_prompt_chars,
        max_extra_networks=max_extra_networks,
        max_image_pixels=max_image_pixels,
        max_request_pixels=max_request_pixels,
        max_images=max_images,
        stream_keepalive=stream_keepalive,
        api_auth=_parse_auth(api_auth),
        api_token=api_token,
        allowed_hosts=tuple(h.strip() for h in (allowed_hosts or "").split(",") if h.strip()),
        compile=compile_unet,
        warmup=warmup,
        model_config=model_config,
        log_level=log_level.value,
        port_file=port_file,
        quantize=quantize.value,
        styles_files=tuple(styles_file),
        lora_dir=lora_dir,
        controlnet_dir=controlnet_dir,
        controlnet_annotator_models_path=controlnet_annotator_models_path,
        embeddings_dir=embeddings_dir,
        lora_cache_mb=lora_cache_mb,
        lora_overlap_steps=lora_overlap_steps,
        converted_max_bytes=int(convert_cache_gb * 1e9),
    )
    logging.basicConfig(
        level=log_level.value.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # The model is read before the web server stack is even imported (knsd.serve.http.startup).
        from knsd.serve.http.startup import begin, start

        prefetch = begin(settings, timeline)
        with timeline.phase("imports"):
            from knsd.serve.http.server import run
        code = run(settings, start(settings, prefetch))
    except KnsdError as exc:
        typer.echo(f"knsd serve: {exc}", err=True)
        code = exc.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    # The pipeline thread cannot be interrupted mid-load; do not wait for it at interpreter exit.
    os._exit(code)
