"""What knsd does with every A1111 request field and override setting it does not simply honour (pure).

A1111's API accepts many fields; knsd either honours a field, ignores it because it cannot change the
images returned (saving to disk, task ids), or refuses a value that would need something knsd lacks with a
422 naming the field. Nothing is silently dropped. The README's tables are these.
"""

from __future__ import annotations

from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.options import OptionSpec, a1111_defaults, option_specs, typed
from knsd.serve.api.sampling import SAMPLER_OPTIONS

# Fields that change nothing a client receives from knsd (A1111 saves files / tracks tasks with them).
IGNORED_FIELDS = (
    "save_images",
    "do_not_save_samples",
    "do_not_save_grid",
    "force_task_id",
    "comments",
    "override_settings_restore_afterwards",  # knsd applies overrides to the one request only
    "script_args",  # only read with a script_name (knsd.serve.api.scripts), as in A1111
    "sampler_index",  # read when sampler_name is empty, as in A1111
    "refiner_switch_at",  # only read with a refiner_checkpoint, which is refused
    "image_cfg_scale",  # only used by instruct-pix2pix models
    # img2img's inpainting fields: checked and honoured there with a mask; txt2img never reads them
    "mask_blur",
    "mask_blur_x",
    "mask_blur_y",
    "mask_round",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
)

# Field -> (values that are fine, what to say): any other value is a 422.
_NEUTRAL: dict[str, tuple[tuple[Any, ...], str]] = {
    "restore_faces": ((None, False), "false: no face restorer is installed (see /sdapi/v1/face-restorers)"),
    "refiner_checkpoint": ((None, "", "None"), "null: knsd serves one checkpoint per pod (no refiner)"),
    "firstpass_image": ((None, ""), "null: a given first-pass image is not supported"),
    "infotext": ((None, ""), "null: filling a request from an infotext is not supported; send the fields"),
    "latent_mask": (
        (None, ""),
        "null: a separate latent mask (A1111 scripts set one) is not supported; send mask",
    ),
    "firstphase_width": ((None, 0), "0: the legacy first-phase size is not supported; use width"),
    "firstphase_height": ((None, 0), "0: the legacy first-phase size is not supported; use height"),
    "s_min_uncond": ((None, 0, 0.0), "0 (negative guidance minimum sigma is not supported)"),
    "token_merging_ratio": ((None, 0, 0.0), "0 (token merging is not supported)"),
    "token_merging_ratio_hr": ((None, 0, 0.0), "0 (token merging is not supported)"),
    "hr_checkpoint_name": ((None, "", "Use same checkpoint"), "null: knsd serves one checkpoint per pod"),
}


def _among(value: Any, fine: tuple[Any, ...]) -> bool:
    """`value in fine` without Python's True == 1 and False == 0."""
    for v in fine:
        if v is None or value is None or isinstance(v, bool) or isinstance(value, bool):
            if v is value:
                return True
        elif isinstance(v, (int, float)) and isinstance(value, (int, float)):
            if v == value:
                return True
        elif type(v) is type(value) and v == value:
            return True
    return False


# img2img's fields: txt2img has no init image to apply them to.
_IMG2IMG_ONLY: dict[str, tuple[tuple[Any, ...], str]] = {
    "mask": ((None, ""), "null: a mask is an img2img field (POST /sdapi/v1/img2img)"),
    "initial_noise_multiplier": ((None, 1, 1.0), "null or 1: the noise multiplier is an img2img field"),
}


def check_neutral_fields(body: dict[str, Any], img2img: bool = False) -> None:
    """Refuse any field whose value would ask for a feature knsd does not have (or the route lacks)."""
    checks = _NEUTRAL if img2img else {**_NEUTRAL, **_IMG2IMG_ONLY}
    for key, (fine, allowed) in checks.items():
        value = body.get(key)
        if not _among(value, fine):
            raise InvalidField(key, allowed, value)


# override_settings / options keys that knsd honours, with their A1111 defaults.
GENERATION_OPTIONS: dict[str, Any] = {
    "CLIP_stop_at_last_layers": 1,
    "emphasis": "Original",
    "comma_padding_backtrack": 20,
    "sdxl_clip_l_skip": False,
    "use_old_scheduling": False,
    "enable_prompt_comments": True,
    "tiling": False,  # the default of the request's `tiling`
    "inpainting_mask_weight": 1.0,  # inpainting models: how much of the masked image they see
    "initial_noise_multiplier": 1.0,  # img2img: the start noise x this (the request's field wins)
    **SAMPLER_OPTIONS,  # eta_ancestral, eta_ddim, s_churn, s_tmin, s_tmax, s_noise, eta_noise_seed_delta
    # Live previews (knsd.serve.api.preview). A1111's default method is "Approx NN", whose weights it
    # downloads; knsd downloads nothing, so its default is the weight-free "Approx cheap". The other
    # preview keys are stored and change nothing knsd returns: `live_previews_image_format` and
    # `live_preview_refresh_period` are for A1111's web UI (its API sends PNG previews, as knsd does);
    # previews always show the guided estimate whatever `live_preview_content` says; there is no low-VRAM
    # mode for `live_preview_fast_interrupt` and `live_preview_allow_lowvram_full` to change.
    "live_previews_enable": True,
    "show_progress_every_n_steps": 10,
    "show_progress_type": "Approx cheap",
    "show_progress_grid": True,
}
# Where knsd's value differs from a fresh A1111's: knsd always draws noise on CPU generators.
KNSD_DEFAULTS: dict[str, Any] = {"randn_source": "CPU"}
# Further values knsd honours for keys it otherwise keeps at their default.
_ALSO_ACCEPTED: dict[str, tuple[Any, ...]] = {"sd_vae": ("Automatic", "None")}
# Options with ranges beyond their type.
_AT_LEAST_ZERO = ("eta_ancestral", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise")
# A1111's slider ranges, for options that are fractions.
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "inpainting_mask_weight": (0.0, 1.0),
    "initial_noise_multiplier": (0.0, 1.5),
}


def server_options() -> dict[str, Any]:
    """The options object a knsd server starts with: every key of A1111 v1.10.1's, at A1111's defaults
    except where knsd's setting is another (KNSD_DEFAULTS, GENERATION_OPTIONS)."""
    return {**a1111_defaults(), **KNSD_DEFAULTS, **GENERATION_OPTIONS}


def _honoured(key: str, value: Any, name: str) -> Any:
    spec = option_specs().get(key)
    default = GENERATION_OPTIONS[key]
    if spec is None:
        spec = OptionSpec(key, default, type(default).__name__)
    value = typed(spec, value, name)
    if key in _AT_LEAST_ZERO and value < 0:
        raise InvalidField(name, "a number of at least 0", value)
    if key in OPTION_RANGES:
        lo, hi = OPTION_RANGES[key]
        if not lo <= value <= hi:
            raise InvalidField(name, f"a number between {lo:g} and {hi:g}", value)
        value = float(value)
    return value


def _kept(spec: OptionSpec, value: Any, current: Any, name: str) -> Any:
    """A key knsd cannot change: only its current value (the default; the loaded model's hash for
    `sd_checkpoint_hash`) or a value listed as also accepted (same effect)."""
    value = typed(spec, value, name)
    fine = (current, *(v for v in _ALSO_ACCEPTED.get(spec.key, ()) if not _among(v, (current,))))
    if not _among(value, fine):
        allowed = " or ".join(repr(v) for v in fine)
        raise InvalidField(
            name,
            allowed,
            value,
            f"{name} must be {allowed}, got {value!r}: knsd cannot change this setting ({spec.note})",
        )
    return value


def generation_options(
    base: dict[str, Any], overrides: Any, field: str = "override_settings"
) -> dict[str, Any]:
    """The options object with `overrides` applied (a request's `override_settings`, or a
    `POST /sdapi/v1/options` body with `field` ""), every key checked before any is set.

    Each key of A1111's object is honoured (GENERATION_OPTIONS), stored as a setting that changes nothing
    knsd returns (UI, saving, system: kind "b"), or accepted only at the value knsd has (a 422 naming the
    key and why otherwise); a key A1111 does not have is a 422 (A1111 answers a 500). null changes nothing.
    `sd_model_checkpoint` is checked against the loaded model by the caller.
    """
    prefix = f"{field}." if field else ""
    if overrides is None:
        return dict(base)
    if not isinstance(overrides, dict):
        raise InvalidField(field or "body", "an object of A1111 setting names to values", overrides)
    out = dict(base)
    specs = option_specs()
    for key, value in overrides.items():
        name = prefix + key
        spec = specs.get(key)
        if value is None or key == "sd_model_checkpoint":
            continue
        if key in GENERATION_OPTIONS:
            out[key] = _honoured(key, value, name)
        elif spec is None:
            raise InvalidField(
                name, "a key of A1111 v1.10.1's options object (GET /sdapi/v1/options lists them)", value
            )
        elif spec.kind == "b" and not spec.restrict_api:
            out[key] = typed(spec, value, name)
        else:
            out[key] = _kept(spec, value, base.get(key, spec.default), name)
    return out
