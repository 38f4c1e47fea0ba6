"""knsd's schedulers for A1111's stochastic samplers: eta, churn, sigma noise, ENSD and Brownian noise as
A1111 v1.10.1 samples them, on diffusers' pipelines. `build` makes a fresh one per sampling pass."""

from __future__ import annotations

from typing import Any

from knsd.serve.generate.samplers.kdiffusion import SamplerRun

__all__ = ["OWN_SCHEDULERS", "SamplerRun", "build"]


def _classes() -> dict[str, Any]:
    from knsd.serve.generate.samplers.ancestral import DDIM, DPM2Ancestral, Euler, EulerAncestral
    from knsd.serve.generate.samplers.sde import DPMpp2MSDE, DPMpp2MSDEHeun, DPMpp3MSDE, DPMppSDE

    return {
        "Euler a": EulerAncestral,
        "DPM2 a": DPM2Ancestral,
        "DPM++ SDE": DPMppSDE,
        "DPM++ 2M SDE": DPMpp2MSDE,
        "DPM++ 2M SDE Heun": DPMpp2MSDEHeun,
        "DPM++ 3M SDE": DPMpp3MSDE,
        "DDIM": DDIM,
        "Euler": Euler,
    }


# A1111's samplers knsd runs on its own schedulers (diffusers' lack eta, the generators' noise, churn or
# k-diffusion's start from noise x sigma_max); the others run on diffusers' own.
OWN_SCHEDULERS = frozenset(
    {"Euler", "Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DDIM"}
)


def build(sampler: str, config: Any, options: dict[str, Any], run: SamplerRun) -> Any:
    """A fresh scheduler for one pass of `sampler` with its parameters and noise."""
    scheduler = _classes()[sampler].from_config(config, **options)
    scheduler.knsd = run
    return scheduler
