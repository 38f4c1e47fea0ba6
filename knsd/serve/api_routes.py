"""A1111's remaining `/sdapi/v1/*` routes: png-info, listings, memory, skip, refreshes and extras.

Shapes follow AUTOMATIC1111/stable-diffusion-webui `modules/api/api.py` and `modules/api/models.py`
(v1.10). Every handler is described for the OpenAPI document next to its definition (`@doc`).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from knsd.errors import InvalidField
from knsd.serve import listings
from knsd.serve.extras import encode_with_info, parse_extras, run_extras
from knsd.serve.openapi import doc
from knsd.serve.params import decode_image, require_object
from knsd.serve.pnginfo import parse_generation_parameters, read_info
from knsd.serve.routes import read_json
from knsd.serve.schemas import (
    ANY,
    B64_IMAGE,
    NULL,
    arr,
    boolean,
    integer,
    number,
    obj,
    opt,
    string,
)
from knsd.serve.state import ServerState
from knsd.serve.upscalers import LATENT_UPSCALE_MODES, upscaler_items


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.knsd
    return state


async def _body(request: Request) -> dict[str, Any]:
    return require_object(await read_json(request, _state(request).settings.max_body_bytes))


PNG_INFO_RESPONSE = obj(
    {
        "info": string('the `parameters` text, "" when the image has none'),
        "items": obj({}, description="the image's other metadata"),
        "parameters": obj({}, description="the infotext parsed as A1111 does (Prompt, Steps, Size-1, ...)"),
    },
    required=("info", "items", "parameters"),
)


@doc(
    "Read the generation parameters of an image",
    request=obj({"image": B64_IMAGE}, required=("image",)),
    response=PNG_INFO_RESPONSE,
)
async def png_info(request: Request) -> Response:
    body = await _body(request)
    data = body.get("image")
    image = decode_image("image", data.strip() if isinstance(data, str) else data)
    geninfo, items = read_info(image)
    text = geninfo or ""
    params = parse_generation_parameters(text, _state(request).styles)
    return JSONResponse({"info": text, "items": items, "parameters": params})


LORA_ITEM = obj({"name": string(), "alias": string(), "path": string(), "metadata": obj({})})


@doc("LoRA files", response=arr(LORA_ITEM))
async def loras(request: Request) -> Response:
    return JSONResponse(listings.lora_items(_state(request)))


@doc("Rescan the LoRA files", response=NULL)
async def refresh_loras(request: Request) -> Response:
    listings.refresh_loras(_state(request))
    return JSONResponse(None)


EMBEDDING_ITEM = obj(
    {
        "step": opt(integer()),
        "sd_checkpoint": opt(string()),
        "sd_checkpoint_name": opt(string()),
        "shape": integer(),
        "vectors": integer(),
    }
)


@doc(
    "Textual-inversion embeddings",
    response=obj(
        {
            "loaded": obj({}, additionalProperties=EMBEDDING_ITEM),
            "skipped": obj({}, additionalProperties=EMBEDDING_ITEM),
        },
        required=("loaded", "skipped"),
    ),
)
async def embeddings(request: Request) -> Response:
    return JSONResponse(listings.embedding_items(_state(request)))


@doc("Reload the embeddings", response=NULL)
async def refresh_embeddings(request: Request) -> Response:
    listings.refresh_embeddings(_state(request))
    return JSONResponse(None)


UPSCALER_ITEM = obj(
    {
        "name": string(),
        "model_name": opt(string()),
        "model_path": opt(string()),
        "model_url": opt(string()),
        "scale": opt(number()),
    }
)


@doc(
    "Image upscalers (None, Lanczos, Nearest: model upscalers are not supported)", response=arr(UPSCALER_ITEM)
)
async def upscalers(request: Request) -> Response:
    return JSONResponse(upscaler_items())


@doc("Latent upscale modes for hires fix", response=arr(obj({"name": string()})))
async def latent_upscale_modes(request: Request) -> Response:
    return JSONResponse([{"name": name} for name in LATENT_UPSCALE_MODES])


@doc("Hypernetworks (none: not supported)", response=arr(obj({"name": string(), "path": opt(string())})))
async def hypernetworks(request: Request) -> Response:
    return JSONResponse([])


@doc("Face restorers (none installed)", response=arr(obj({"name": string(), "cmd_dir": opt(string())})))
async def face_restorers(request: Request) -> Response:
    return JSONResponse([])


@doc(
    "Real-ESRGAN models (none installed)",
    response=arr(obj({"name": string(), "path": opt(string()), "scale": opt(integer())})),
)
async def realesrgan_models(request: Request) -> Response:
    return JSONResponse([])


@doc(
    "Prompt styles from --styles-file",
    response=arr(obj({"name": string(), "prompt": opt(string()), "negative_prompt": opt(string())})),
)
async def prompt_styles(request: Request) -> Response:
    return JSONResponse(_state(request).styles.items())


def _cmd_flags(state: ServerState) -> dict[str, Any]:
    """knsd's settings under A1111's flag names where one exists; credentials are never shown."""
    s = state.settings
    return {
        "api": True,
        "nowebui": True,
        "listen": s.host not in ("127.0.0.1", "localhost", "::1"),
        "server_name": s.host,
        "port": s.port,
        "api_auth": "(set)" if s.api_auth else None,
        "ckpt": s.model,
        "no_half": s.dtype == "float32",
        "use_cpu": ["all"] if s.device == "cpu" else [],
        "styles_file": [str(p) for p in s.styles_files],
        "knsd": {
            "model": s.model,
            "device": s.device,
            "dtype": s.dtype,
            "max_queue": s.max_queue,
            "drain_timeout": s.drain_timeout,
            "max_body_bytes": s.max_body_bytes,
            "max_pixels": s.max_pixels,
            "compile": s.compile,
            "warmup": s.warmup,
        },
    }


@doc("The server's command-line settings (A1111's flag names where one exists)", response=obj({}))
async def cmd_flags(request: Request) -> Response:
    return JSONResponse(_cmd_flags(_state(request)))


def _ram() -> dict[str, Any]:
    """A1111's `ram`: used = this process's resident memory, total = the machine's."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError) as exc:
        return {"error": str(exc)}
    return {"free": total - rss, "used": rss, "total": total}


def _cuda() -> dict[str, Any]:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = dict(torch.cuda.memory_stats())

        def pair(key: str) -> dict[str, int]:
            return {"current": stats[f"{key}.all.current"], "peak": stats[f"{key}.all.peak"]}

        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as exc:  # as A1111: a failure is reported in the field, not as an HTTP error
        return {"error": str(exc)}


@doc("Memory use", response=obj({"ram": obj({}), "cuda": obj({})}, required=("ram", "cuda")))
async def memory(request: Request) -> Response:
    return JSONResponse({"ram": _ram(), "cuda": _cuda()})


@doc("Skip the current batch of the running job (the next batch goes on)", response=NULL)
async def skip(request: Request) -> Response:
    engine = _state(request).engine
    skipper = getattr(engine, "skip", None)
    if callable(skipper):
        skipper()
    return JSONResponse(None)


@doc(
    "Script titles (none: scripts are not supported)",
    response=obj({"txt2img": arr(string()), "img2img": arr(string())}),
)
async def scripts(request: Request) -> Response:
    return JSONResponse(listings.script_names(_state(request)))


SCRIPT_INFO = obj(
    {
        "name": opt(string()),
        "is_alwayson": opt(boolean()),
        "is_img2img": opt(boolean()),
        "args": arr(obj({"label": opt(string()), "value": ANY, "choices": opt(arr(string()))})),
    }
)


@doc("Scripts and their arguments", response=arr(SCRIPT_INFO))
async def script_info(request: Request) -> Response:
    return JSONResponse(listings.script_info(_state(request)))


@doc("Rescan the checkpoints (one model per pod: nothing to rescan)", response=NULL)
async def refresh_checkpoints(request: Request) -> Response:
    return JSONResponse(None)


@doc("Rescan the VAE files (none are used)", response=NULL)
async def refresh_vae(request: Request) -> Response:
    return JSONResponse(None)


@doc(
    "External VAE files (none: the model's own VAE is used)",
    response=arr(obj({"model_name": string(), "filename": string()})),
)
async def sd_vae(request: Request) -> Response:
    return JSONResponse([])


EXTRAS_FIELDS: dict[str, Any] = {
    "resize_mode": integer(
        "0: scale by upscaling_resize, 1: to upscaling_resize_w x _h", enum=[0, 1], default=0
    ),
    "show_extras_results": boolean(default=True),
    "gfpgan_visibility": number(minimum=0, maximum=1, default=0),
    "codeformer_visibility": number(minimum=0, maximum=1, default=0),
    "codeformer_weight": number(minimum=0, maximum=1, default=0),
    "upscaling_resize": number(exclusiveMinimum=0, default=2),
    "upscaling_resize_w": integer(minimum=1, default=512),
    "upscaling_resize_h": integer(minimum=1, default=512),
    "upscaling_crop": boolean(default=True),
    "upscaler_1": string("see /sdapi/v1/upscalers", default="None"),
    "upscaler_2": string("see /sdapi/v1/upscalers", default="None"),
    "extras_upscaler_2_visibility": number(minimum=0, maximum=1, default=0),
    "upscale_first": boolean(default=False),
}


async def _extras(request: Request, images: list[Any], body: dict[str, Any]) -> tuple[list[str], str]:
    state = _state(request)
    req = parse_extras(body)

    def work() -> tuple[list[str], str]:
        outputs, html_info = run_extras(images, req, state.settings.max_pixels)
        return [encode_with_info(image) for image in outputs], html_info

    async with state.admission.slot():
        return await state.in_worker(work)


@doc(
    "Upscale one image (extras)",
    request=obj({**EXTRAS_FIELDS, "image": B64_IMAGE}, required=("image",)),
    response=obj({"html_info": string(), "image": opt(string())}, required=("html_info", "image")),
)
async def extra_single_image(request: Request) -> Response:
    body = await _body(request)
    image = decode_image("image", body.get("image"))
    images, html_info = await _extras(request, [image], body)
    return JSONResponse({"html_info": html_info, "image": images[0]})


@doc(
    "Upscale a list of images (extras)",
    request=obj(
        {
            **EXTRAS_FIELDS,
            "imageList": arr(obj({"data": B64_IMAGE, "name": string()}, required=("data", "name"))),
        },
        required=("imageList",),
    ),
    response=obj({"html_info": string(), "images": arr(string())}, required=("html_info", "images")),
)
async def extra_batch_images(request: Request) -> Response:
    body = await _body(request)
    items = body.get("imageList")
    if not isinstance(items, list):
        raise InvalidField("imageList", "a list of {data, name} objects", items)
    images = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidField(f"imageList[{i}]", "an object {data: base64 image, name: string}", item)
        images.append(decode_image(f"imageList[{i}].data", item.get("data")))
    outputs, html_info = await _extras(request, images, body) if images else ([], "<p></p>")
    return JSONResponse({"html_info": html_info, "images": outputs})


ROUTES = [
    Route("/sdapi/v1/png-info", png_info, methods=["POST"]),
    Route("/sdapi/v1/loras", loras, methods=["GET"]),
    Route("/sdapi/v1/refresh-loras", refresh_loras, methods=["POST"]),
    Route("/sdapi/v1/embeddings", embeddings, methods=["GET"]),
    Route("/sdapi/v1/refresh-embeddings", refresh_embeddings, methods=["POST"]),
    Route("/sdapi/v1/upscalers", upscalers, methods=["GET"]),
    Route("/sdapi/v1/latent-upscale-modes", latent_upscale_modes, methods=["GET"]),
    Route("/sdapi/v1/hypernetworks", hypernetworks, methods=["GET"]),
    Route("/sdapi/v1/face-restorers", face_restorers, methods=["GET"]),
    Route("/sdapi/v1/realesrgan-models", realesrgan_models, methods=["GET"]),
    Route("/sdapi/v1/prompt-styles", prompt_styles, methods=["GET"]),
    Route("/sdapi/v1/cmd-flags", cmd_flags, methods=["GET"]),
    Route("/sdapi/v1/memory", memory, methods=["GET"]),
    Route("/sdapi/v1/skip", skip, methods=["POST"]),
    Route("/sdapi/v1/scripts", scripts, methods=["GET"]),
    Route("/sdapi/v1/script-info", script_info, methods=["GET"]),
    Route("/sdapi/v1/extra-single-image", extra_single_image, methods=["POST"]),
    Route("/sdapi/v1/extra-batch-images", extra_batch_images, methods=["POST"]),
    Route("/sdapi/v1/refresh-checkpoints", refresh_checkpoints, methods=["POST"]),
    Route("/sdapi/v1/refresh-vae", refresh_vae, methods=["POST"]),
    Route("/sdapi/v1/sd-vae", sd_vae, methods=["GET"]),
]
