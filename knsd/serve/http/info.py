"""What A1111 clients list on connect: the model, samplers, schedulers, upscalers, styles and scripts, and
the lists of features a pod does not have (hypernetworks, face restorers, external VAEs).

Shapes follow AUTOMATIC1111/stable-diffusion-webui `modules/api/api.py` and `modules/api/models.py` (v1.10).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.samplers import SAMPLERS, SCHEDULES
from knsd.serve.api.schemas import (
    ANY,
    NULL,
    SAMPLER_ITEM,
    SCHEDULER_ITEM,
    SD_MODEL_ITEM,
    arr,
    boolean,
    integer,
    number,
    obj,
    opt,
    string,
)
from knsd.serve.api.scripts import RUNNABLE, script_infos
from knsd.serve.api.upscalers import LATENT_UPSCALE_MODES, upscaler_items
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of


@doc("The loaded checkpoint (one model per pod)", response=arr(SD_MODEL_ITEM), errors=(503,))
async def sd_models(request: Request) -> Response:
    engine = state_of(request).require_engine()
    m = engine.model
    return JSONResponse(
        [
            {
                "title": m.title,
                "model_name": m.info.name,
                "hash": m.info.hash,
                "sha256": m.sha256,
                "filename": str(m.source.path),
                "config": None,
            }
        ]
    )


@doc("Samplers", response=arr(SAMPLER_ITEM))
async def samplers(request: Request) -> Response:
    return JSONResponse(
        [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.a1111_options)} for s in SAMPLERS]
    )


@doc("Schedule types", response=arr(SCHEDULER_ITEM))
async def schedulers(request: Request) -> Response:
    return JSONResponse(
        [
            {
                "name": label.lower().replace(" ", "_"),
                "label": label,
                "aliases": None,
                "default_rho": -1,
                "need_inner_model": False,
            }
            for label in SCHEDULES
        ]
    )


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
    return JSONResponse(state_of(request).styles.items())


@doc(
    "Script titles per tab: the selectable scripts knsd runs and the always-on ControlNet",
    response=obj({"txt2img": arr(string()), "img2img": arr(string())}),
)
async def scripts(request: Request) -> Response:
    # Scripts by lower-cased title per tab; ControlNet is an always-on script in A1111.
    return JSONResponse({tab: [*RUNNABLE[tab], "controlnet"] for tab in ("txt2img", "img2img")})


SCRIPT_INFO = obj(
    {
        "name": opt(string()),
        "is_alwayson": opt(boolean()),
        "is_img2img": opt(boolean()),
        "args": arr(
            obj(
                {
                    "label": opt(string()),
                    "value": ANY,
                    "minimum": ANY,
                    "maximum": ANY,
                    "step": ANY,
                    "choices": opt(arr(string())),
                }
            )
        ),
    }
)


@doc("Scripts and their arguments", response=arr(SCRIPT_INFO))
async def script_info(request: Request) -> Response:
    always_on: list[dict[str, Any]] = [
        {"name": "controlnet", "is_alwayson": True, "is_img2img": tab, "args": []} for tab in (False, True)
    ]
    return JSONResponse([*script_infos(), *always_on])


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
