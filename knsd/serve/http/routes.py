"""The handler's one route table: every path, method and handler of `knsd serve`.

Handlers live beside their concern (generation, jobs, options, info, add-ons, ControlNet, extras, system,
probes, the page, the API docs); each carries its OpenAPI description (`@doc`), so `/openapi.json` is
built from this table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from knsd.serve.http import (
    addons,
    controlnet,
    edits,
    extras,
    generation,
    info,
    jobs,
    openapi,
    options,
    probes,
    system,
    webui,
)

Handler = Callable[[Request], Awaitable[Response]]


def _get(path: str, endpoint: Handler) -> Route:
    return Route(path, endpoint, methods=["GET"])


def _post(path: str, endpoint: Handler) -> Route:
    return Route(path, endpoint, methods=["POST"])


ROUTES = [
    # A1111: generation and the running job
    _post("/sdapi/v1/txt2img", generation.txt2img),
    _post("/sdapi/v1/img2img", generation.img2img),
    _get("/sdapi/v1/progress", jobs.progress),
    _post("/sdapi/v1/interrupt", jobs.interrupt),
    _post("/sdapi/v1/skip", jobs.skip),
    # A1111: settings and listings
    _get("/sdapi/v1/options", options.get_options),
    _post("/sdapi/v1/options", options.set_options),
    _get("/sdapi/v1/sd-models", info.sd_models),
    _get("/sdapi/v1/samplers", info.samplers),
    _get("/sdapi/v1/schedulers", info.schedulers),
    _get("/sdapi/v1/upscalers", info.upscalers),
    _get("/sdapi/v1/latent-upscale-modes", info.latent_upscale_modes),
    _get("/sdapi/v1/hypernetworks", info.hypernetworks),
    _get("/sdapi/v1/face-restorers", info.face_restorers),
    _get("/sdapi/v1/realesrgan-models", info.realesrgan_models),
    _get("/sdapi/v1/prompt-styles", info.prompt_styles),
    _get("/sdapi/v1/scripts", info.scripts),
    _get("/sdapi/v1/script-info", info.script_info),
    _get("/sdapi/v1/sd-vae", info.sd_vae),
    _post("/sdapi/v1/refresh-checkpoints", info.refresh_checkpoints),
    _post("/sdapi/v1/refresh-vae", info.refresh_vae),
    _get("/sdapi/v1/loras", addons.loras),
    _post("/sdapi/v1/refresh-loras", addons.refresh_loras),
    _get("/sdapi/v1/embeddings", addons.embeddings),
    _post("/sdapi/v1/refresh-embeddings", addons.refresh_embeddings),
    _get("/sdapi/v1/cmd-flags", system.cmd_flags),
    _get("/sdapi/v1/memory", system.memory),
    # A1111: images without generation
    _post("/sdapi/v1/png-info", extras.png_info),
    _post("/sdapi/v1/extra-single-image", extras.extra_single_image),
    _post("/sdapi/v1/extra-batch-images", extras.extra_batch_images),
    # sd-webui-controlnet
    _get("/controlnet/version", controlnet.version),
    _get("/controlnet/model_list", controlnet.model_list),
    _get("/controlnet/module_list", controlnet.module_list),
    _get("/controlnet/settings", controlnet.settings),
    _get("/controlnet/control_types", controlnet.control_types),
    _post("/controlnet/detect", controlnet.detect),
    # OpenAI
    _post("/v1/images/generations", generation.openai_images),
    _post("/v1/images/edits", edits.openai_edits),
    # Knative's probes and Prometheus
    _get("/healthz", probes.healthz),
    _get("/readyz", probes.readyz),
    _get("/metrics", probes.metrics),
    # the page and the API docs
    _get("/", webui.index),
    _get("/ui/{name}", webui.asset),
    _get("/openapi.json", openapi.openapi_json),
    _get("/docs", openapi.docs),
    _get("/docs/{name}", openapi.docs_asset),
]
