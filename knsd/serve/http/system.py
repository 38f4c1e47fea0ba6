"""The server itself: A1111's `cmd-flags` (knsd's settings under A1111's names) and `memory`."""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.schemas import obj
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import ServerState, state_of


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
            "max_prompt_chars": s.max_prompt_chars,
            "max_extra_networks": s.max_extra_networks,
            "allowed_hosts": list(s.allowed_hosts),
            "compile": s.compile,
            "warmup": s.warmup,
        },
    }


@doc("The server's command-line settings (A1111's flag names where one exists)", response=obj({}))
async def cmd_flags(request: Request) -> Response:
    return JSONResponse(_cmd_flags(state_of(request)))


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
