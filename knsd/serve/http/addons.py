"""The add-on listings in A1111's shapes: LoRAs and textual-inversion embeddings, and their rescans.

Shapes are A1111's (`extensions-builtin/Lora`, `modules/api/api.py`); while the model loads the lists are
empty.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.schemas import NULL, arr, integer, obj, opt, string
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of

LORA_ITEM = obj({"name": string(), "alias": string(), "path": string(), "metadata": obj({})})


@doc("LoRA files", response=arr(LORA_ITEM))
async def loras(request: Request) -> Response:
    addons = state_of(request).addons
    return JSONResponse(addons.lora_api() if addons is not None else [])


@doc("Rescan the LoRA files", response=NULL)
async def refresh_loras(request: Request) -> Response:
    addons = state_of(request).addons
    if addons is not None:
        await state_of(request).offload.run(addons.refresh_loras)  # reads every file's header
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
    addons = state_of(request).addons
    if addons is None:
        return JSONResponse({"loaded": {}, "skipped": {}})
    store = addons.embeddings
    return JSONResponse(
        {
            "loaded": {n: e.api() for n, e in store.loaded.items()},
            "skipped": {n: e.api() for n, e in store.skipped.items()},
        }
    )


@doc("Reload the embeddings", response=NULL)
async def refresh_embeddings(request: Request) -> Response:
    addons = state_of(request).addons
    if addons is not None:  # read off the event loop, installed before the next generation
        await state_of(request).offload.run(addons.embeddings.refresh)
    return JSONResponse(None)
