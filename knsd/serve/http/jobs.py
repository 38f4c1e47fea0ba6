"""The running job: A1111's progress, interrupt and skip."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.schemas import EMPTY_OBJECT, NULL, PROGRESS_RESPONSE, boolean
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of


@doc(
    "Progress of the running job",
    response=PROGRESS_RESPONSE,
    query=(("skip_current_image", boolean(default=False)),),
)
async def progress(request: Request) -> Response:
    engine = state_of(request).engine
    p = engine.progress if engine is not None else None
    fraction = p.fraction() if p else 0.0
    elapsed = time.time() - p.started if p and p.job_count else 0.0
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return JSONResponse(
        {
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
            "current_image": None,
            "textinfo": None,
            "current_task": None,
        }
    )


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
