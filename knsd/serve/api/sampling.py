"""A1111's sampler parameters: eta, churn, sigma noise and ENSD, resolved per sampler (pure).

Follows AUTOMATIC1111/stable-diffusion-webui v1.10.1 `modules/sd_samplers_common.py` (Sampler.initialize,
is_sampler_using_eta_noise_seed_delta) and `modules/processing.py` (fill_fields_from_opts): a request field
left null takes the option of the same name; eta falls back to `eta_ancestral` (k-diffusion samplers) or
`eta_ddim` (DDIM). A sampler only reads the parameters its k-diffusion function takes; the rest are
ignored, by A1111 as by knsd, and leave no trace in the infotext.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField

# Which of knsd's samplers read which parameter (k-diffusion @ ab527a9a signatures, A1111's extra params).
READS_ETA = frozenset({"Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"})
READS_ETA_DDIM = frozenset({"DDIM"})
READS_CHURN = frozenset({"Euler", "Heun", "DPM2"})  # s_churn, s_tmin, s_tmax (and s_noise)
READS_S_NOISE = READS_CHURN | (READS_ETA - {"Euler a"})
USES_ENSD = frozenset({"Euler a", "DPM2 a"})  # A1111's `uses_ensd` sampler option
# Churn is honoured where knsd's scheduler evaluates the model at the churned sigma.
CHURN_HONOURED = frozenset({"Euler"})

SAMPLER_OPTIONS: dict[str, Any] = {
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "eta_noise_seed_delta": 0,
}
_CHURN_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
_INFOTEXT = {
    "s_churn": "Sigma churn",
    "s_tmin": "Sigma tmin",
    "s_tmax": "Sigma tmax",
    "s_noise": "Sigma noise",
}


@dataclass(frozen=True, slots=True)
class SamplingFields:
    """The request's sampler fields as given (None = null) and the server options behind them."""

    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    options: tuple[tuple[str, Any], ...] = tuple(SAMPLER_OPTIONS.items())

    def option(self, key: str) -> Any:
        return dict(self.options).get(key, SAMPLER_OPTIONS[key])


@dataclass(frozen=True, slots=True)
class SamplerParams:
    """What one sampler of one pass uses, with the infotext keys A1111 writes for it."""

    eta: float = 0.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    ensd: int = 0
    writes_ensd: bool = False  # the infotext's `ENSD` (a fixed slot after `Clip skip`)
    infotext: tuple[tuple[str, Any], ...] = ()


def _finite(body: dict[str, Any], key: str, lo: float = -math.inf) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < lo
    ):
        allowed = "a finite number" if lo == -math.inf else f"a finite number of at least {lo:g}"
        raise InvalidField(key, allowed, value)
    return value


def parse_sampling(body: dict[str, Any], options: dict[str, Any]) -> SamplingFields:
    """The sampler fields of an A1111 body; `options` are the merged server options."""
    return SamplingFields(
        eta=_finite(body, "eta", 0.0),
        s_churn=_finite(body, "s_churn", 0.0),
        s_tmin=_finite(body, "s_tmin", 0.0),
        s_tmax=_finite(body, "s_tmax", 0.0),
        s_noise=_finite(body, "s_noise", 0.0),
        options=tuple((k, options.get(k, v)) for k, v in SAMPLER_OPTIONS.items()),
    )


def resolve(fields: SamplingFields, sampler: str) -> SamplerParams:
    """A1111's values for `sampler`: request, else option; an option off its default beats the request
    for churn and noise (and is the only one written to the infotext, as A1111 does)."""
    infotext: list[tuple[str, Any]] = []
    eta = 0.0
    if sampler in READS_ETA or sampler in READS_ETA_DDIM:
        ddim = sampler in READS_ETA_DDIM
        given = (
            fields.eta if fields.eta is not None else fields.option("eta_ddim" if ddim else "eta_ancestral")
        )
        eta = float(given)
        if eta != (0.0 if ddim else 1.0):
            infotext.append(("Eta DDIM" if ddim else "Eta", given))
    values = dict(_CHURN_DEFAULTS)
    for key, default in _CHURN_DEFAULTS.items():
        if not (sampler in READS_CHURN or (key == "s_noise" and sampler in READS_S_NOISE)):
            continue
        given_value = getattr(fields, key)
        option = fields.option(key)
        values[key] = _sigma(key, given_value if given_value is not None else option)
        if _sigma(key, option) != default:
            values[key] = _sigma(key, option)
            infotext.append((_INFOTEXT[key], option))
    ensd = int(fields.option("eta_noise_seed_delta"))
    writes_ensd = bool(ensd) and sampler in USES_ENSD and eta != 0
    return SamplerParams(
        eta,
        values["s_churn"],
        values["s_tmin"],
        values["s_tmax"],
        values["s_noise"],
        ensd,
        writes_ensd,
        tuple(infotext),
    )


def _sigma(key: str, value: Any) -> float:
    """s_tmax 0 means no upper bound, as in A1111."""
    return math.inf if key == "s_tmax" and not value else float(value)


def check_sampler_params(
    fields: SamplingFields, sampler: str, honours_churn: frozenset[str] = CHURN_HONOURED
) -> None:
    """Refuse churn on a sampler that reads it but whose knsd scheduler cannot churn as A1111 does (the
    model must be evaluated at the churned sigma)."""
    params = resolve(fields, sampler)
    if params.s_churn > 0 and sampler not in honours_churn:
        where = "s_churn" if fields.s_churn else "override_settings.s_churn"
        raise InvalidField(
            where,
            f"0 with sampler {sampler}: knsd churns only with " + ", ".join(sorted(honours_churn)),
            params.s_churn,
        )
