"""The running job: A1111's progress, interrupt and skip."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.schemas import EMPTY_OBJECT, NULL, PROGRESS_RESPONSE, boolean
from knsd.serve.generate.progress import Progress
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of


def progress_body(p: Progress | None, current_image: str | None) -> dict[str, Any]:
    """A1111's `/sdapi/v1/progress` answer for the job `p` reports (None: nothing has run yet)."""
    fraction = p.fraction() if p else 0.0
    elapsed = time.time() - p.started if p and p.job_count else 0.0
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return {
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": False,
            "interrupted": bool(p and p.interrupted),
            "stopping_generation": False,
            "job": p.job if p else "",
            "job_count": p.job_count if p else 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(p.started if p else None)),
            "job_no": p.job_no if p else 0,
            "sampling_step": p.sampling_step if p else 0,
            "sampling_steps": p.sampling_steps if p else 0,
        },
        "current_image": current_image,
        "textinfo": None,
        "current_task": None,
    }


@doc(
    "Progress of the running job, with its latest live preview",
    response=PROGRESS_RESPONSE,
    query=(("skip_current_image", boolean(default=False)),),
)
async def progress(request: Request) -> Response:
    engine = state_of(request).engine
    p = engine.progress if engine is not None else None
    skip = request.query_params.get("skip_current_image", "").lower() in ("1", "true", "yes", "on")
    # As A1111: an idle server answers without a preview.
    image = p.current_image if p is not None and p.job_count and not skip else None
    return JSONResponse(progress_body(p, image))


@doc("Stop the running job after its current step", response=EMPTY_OBJECT)
async def interrupt(request: Request) -> Response:
    engine = state_of(request).engine
    if engine is not None:
        engine.interrupt()
    return JSONResponse({})


@doc("Skip the current batch of the running job (the next batch goes on)", response=NULL)
async def skip(request: Request) -> Response:
    engine = state_of(request).engine
    if engine is not None:
        engine.skip()
    return JSONResponse(None)
