"""What knsd does with every A1111 request field and override setting it does not simply honour (pure).

A1111's API accepts many fields; knsd either honours a field, ignores it because it cannot change the
images returned (saving to disk, task ids), or refuses a value that would need something knsd lacks with a
422 naming the field. Nothing is silently dropped. The README's tables are these.
"""

from __future__ import annotations

import math
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.sampling import SAMPLER_OPTIONS

# Fields that change nothing a client receives from knsd (A1111 saves files / tracks tasks with them).
IGNORED_FIELDS = (
    "save_images",
    "do_not_save_samples",
    "do_not_save_grid",
    "force_task_id",
    "comments",
    "override_settings_restore_afterwards",  # knsd applies overrides to the one request only
    "script_args",  # only read with a script_name, which is refused
    "sampler_index",  # read when sampler_name is empty, as in A1111
    "refiner_switch_at",  # only read with a refiner_checkpoint, which is refused
    "image_cfg_scale",  # only used by instruct-pix2pix models
    "mask_blur",
    "mask_blur_x",
    "mask_blur_y",
    "mask_round",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",  # the inpainting fields are only read with a mask, which is refused
)

# Field -> (values that are fine, what to say): any other value is a 422.
_NEUTRAL: dict[str, tuple[tuple[Any, ...], str]] = {
    "restore_faces": ((None, False), "false: no face restorer is installed (see /sdapi/v1/face-restorers)"),
    "tiling": ((None, False), "false: tiling is not supported by knsd"),
    "refiner_checkpoint": ((None, "", "None"), "null: knsd serves one checkpoint per pod (no refiner)"),
    "script_name": ((None, ""), "null: no selectable scripts are installed (see /sdapi/v1/scripts)"),
    "firstpass_image": ((None, ""), "null: a given first-pass image is not supported"),
    "infotext": ((None, ""), "null: filling a request from an infotext is not supported; send the fields"),
    "mask": ((None, ""), "null: inpainting is not supported by knsd"),
    "latent_mask": ((None, ""), "null: inpainting is not supported by knsd"),
    "firstphase_width": ((None, 0), "0: the legacy first-phase size is not supported; use width"),
    "firstphase_height": ((None, 0), "0: the legacy first-phase size is not supported; use height"),
    "s_min_uncond": ((None, 0, 0.0), "0 (negative guidance minimum sigma is not supported)"),
    "initial_noise_multiplier": ((None, 1, 1.0), "1 (the noise multiplier is not supported)"),
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


def check_neutral_fields(body: dict[str, Any]) -> None:
    """Refuse any field whose value would ask for a feature knsd does not have."""
    for key, (fine, allowed) in _NEUTRAL.items():
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
    **SAMPLER_OPTIONS,  # eta_ancestral, eta_ddim, s_churn, s_tmin, s_tmax, s_noise, eta_noise_seed_delta
}
# Keys accepted only at these values (A1111 defaults or what knsd does anyway).
_FIXED_OPTIONS: dict[str, tuple[Any, ...]] = {
    "samples_format": ("png",),
    "randn_source": ("CPU",),
    "sd_vae": ("Automatic", "None"),
    "pad_cond_uncond": (False,),
    "pad_cond_uncond_v0": (False,),
    "use_old_emphasis_implementation": (False,),
    "use_old_hires_fix_width_height": (False,),
    "hires_fix_use_firstpass_conds": (False,),
    "always_discard_next_to_last_sigma": (False,),
    "face_restoration": (False,),
    "tiling": (False,),
    "token_merging_ratio": (0, 0.0),
    "token_merging_ratio_hr": (0, 0.0),
    "img2img_fix_steps": (False,),
    "initial_noise_multiplier": (1, 1.0),
    "img2img_extra_noise": (0, 0.0),
    "s_min_uncond": (0, 0.0),
}
# Keys that change nothing knsd returns (saving, UI, previews, infotext cosmetics knsd always applies).
_HARMLESS_PREFIXES = ("save", "outdir", "samples_", "grid", "live_preview", "show_", "js_", "ui_", "add_")
_HARMLESS = {
    "return_grid",
    "jpeg_quality",
    "enable_pnginfo",
    "export_for_4chan",
    "img_max_size_mp",
    "sd_model_checkpoint",  # checked against the loaded model by the caller
    "sd_checkpoint_hash",
}


def _check_type(key: str, value: Any, default: Any, prefix: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidField(prefix + key, "true or false", value)
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(prefix + key, "an integer", value)
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidField(prefix + key, "a finite number", value)
        return value
    if not isinstance(value, str):
        raise InvalidField(prefix + key, "a string", value)
    return value


def generation_options(
    base: dict[str, Any], overrides: Any, field: str = "override_settings"
) -> dict[str, Any]:
    """Server options with a request's `override_settings` applied; unknown or unsupported keys are 422.

    `field` names the object in errors (`override_settings`, or "" for `/sdapi/v1/options` bodies).
    """
    prefix = f"{field}." if field else ""
    if overrides is None:
        return dict(base)
    if not isinstance(overrides, dict):
        raise InvalidField(field or "body", "an object of A1111 setting names to values", overrides)
    out = dict(base)
    for key, value in overrides.items():
        if key in GENERATION_OPTIONS:
            out[key] = _check_type(key, value, GENERATION_OPTIONS[key], prefix)
        elif key in _FIXED_OPTIONS:
            if not _among(value, _FIXED_OPTIONS[key]):
                allowed = " or ".join(repr(v) for v in _FIXED_OPTIONS[key])
                raise InvalidField(prefix + key, f"{allowed} (what knsd supports)", value)
        elif key in _HARMLESS or key.startswith(_HARMLESS_PREFIXES):
            continue
        else:
            known = ", ".join([*GENERATION_OPTIONS, *_FIXED_OPTIONS])
            raise InvalidField(prefix + key, f"a setting knsd knows ({known}, or saving/UI settings)", value)
    return out
