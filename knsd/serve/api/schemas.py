"""JSON Schema builders for the OpenAPI document, and the schemas several routes share (pure data).

Field lists and defaults follow AUTOMATIC1111/stable-diffusion-webui `modules/api/models.py` (v1.10), so
the document reads like A1111's FastAPI one; every A1111 field is `Optional` there, so null is allowed.
"""

from __future__ import annotations

from typing import Any

from knsd.serve.api.options import option_specs

Schema = dict[str, Any]


def obj(props: dict[str, Schema], required: tuple[str, ...] = (), extra: bool = True, **kw: Any) -> Schema:
    """An object schema; `extra=False` forbids unknown keys (A1111 ignores them, so mostly True)."""
    schema: Schema = {"type": "object", "properties": props, **kw}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def arr(items: Schema, **kw: Any) -> Schema:
    return {"type": "array", "items": items, **kw}


def opt(schema: Schema) -> Schema:
    """Nullable, as A1111's `Optional[...]` fields are (OpenAPI 3.1: a type list)."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    return out


def string(description: str = "", **kw: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **kw}


def integer(description: str = "", **kw: Any) -> Schema:
    return {"type": "integer", **({"description": description} if description else {}), **kw}


def number(description: str = "", **kw: Any) -> Schema:
    return {"type": "number", **({"description": description} if description else {}), **kw}


def boolean(description: str = "", **kw: Any) -> Schema:
    return {"type": "boolean", **({"description": description} if description else {}), **kw}


ANY: Schema = {}
NULL: Schema = {"type": "null", "description": "A1111 answers `null`"}
EMPTY_OBJECT: Schema = obj({}, description="`{}`")
B64_IMAGE = string("a base64 PNG/JPEG/WebP image, optionally as a `data:image/...;base64,` URL")

ERROR = obj(
    {
        "error": string("exception class, e.g. InvalidField"),
        "detail": string("what was wrong"),
        "body": string(),
        "errors": string("`<status>: <detail>`"),
        "field": string("the request field at fault (InvalidField)"),
        "allowed": string("what the field accepts (InvalidField)"),
        "received": ANY,
    },
    required=("error", "detail", "body", "errors"),
    description="A1111's error shape plus knsd's field/allowed/received",
)

_SHARED_FIELDS: dict[str, Schema] = {
    "prompt": opt(string(default="")),
    "negative_prompt": opt(string(default="")),
    "styles": opt(arr(string(), description="names from /sdapi/v1/prompt-styles, applied in order")),
    "seed": opt(integer("-1: random", default=-1, minimum=-1, maximum=4294967294)),
    "subseed": opt(integer("variation seed; -1: random", default=-1, minimum=-1, maximum=4294967294)),
    "subseed_strength": opt(number(default=0, minimum=0, maximum=1)),
    "seed_resize_from_h": opt(integer(default=-1, minimum=-1, maximum=2048)),
    "seed_resize_from_w": opt(integer(default=-1, minimum=-1, maximum=2048)),
    "sampler_name": opt(string("see /sdapi/v1/samplers")),
    "sampler_index": opt(string("legacy name of sampler_name", default="Euler")),
    "scheduler": opt(string("schedule type, see /sdapi/v1/schedulers")),
    "batch_size": opt(integer(default=1, minimum=1, maximum=8)),
    "n_iter": opt(integer(default=1, minimum=1, maximum=8)),
    "steps": opt(integer(default=50, minimum=1, maximum=150)),
    "cfg_scale": opt(number(default=7.0, minimum=0, maximum=30)),
    "width": opt(integer(default=512, minimum=64, maximum=2048, multipleOf=8)),
    "height": opt(integer(default=512, minimum=64, maximum=2048, multipleOf=8)),
    "restore_faces": opt(boolean()),
    "tiling": opt(boolean()),
    "do_not_save_samples": opt(boolean(default=False)),
    "do_not_save_grid": opt(boolean(default=False)),
    "eta": opt(number()),
    "denoising_strength": opt(number(minimum=0, maximum=1)),
    "s_min_uncond": opt(number()),
    "s_churn": opt(number()),
    "s_tmax": opt(number()),
    "s_tmin": opt(number()),
    "s_noise": opt(number()),
    "override_settings": opt(obj({}, description='e.g. {"CLIP_stop_at_last_layers": 2}')),
    "override_settings_restore_afterwards": opt(boolean(default=True)),
    "refiner_checkpoint": opt(string()),
    "refiner_switch_at": opt(number()),
    "disable_extra_networks": opt(boolean(default=False)),
    "firstpass_image": opt(string()),
    "token_merging_ratio": opt(number()),
    "token_merging_ratio_hr": opt(number()),
    "comments": opt(obj({})),
    "script_name": opt(string()),
    "script_args": opt(arr(ANY, default=[])),
    "send_images": opt(boolean(default=True)),
    "save_images": opt(boolean(default=False)),
    "alwayson_scripts": opt(obj({}, default={})),
    "force_task_id": opt(string()),
    "infotext": opt(string()),
}

TXT2IMG_REQUEST = obj(
    {
        **_SHARED_FIELDS,
        "enable_hr": opt(boolean(default=False)),
        "firstphase_width": opt(integer(default=0)),
        "firstphase_height": opt(integer(default=0)),
        "hr_scale": opt(number(default=2.0, minimum=1, maximum=8)),
        "hr_upscaler": opt(string("see /sdapi/v1/upscalers and /sdapi/v1/latent-upscale-modes")),
        "hr_second_pass_steps": opt(integer(default=0, minimum=0, maximum=150)),
        "hr_resize_x": opt(integer(default=0, minimum=0, maximum=2048)),
        "hr_resize_y": opt(integer(default=0, minimum=0, maximum=2048)),
        "hr_checkpoint_name": opt(string()),
        "hr_sampler_name": opt(string()),
        "hr_scheduler": opt(string()),
        "hr_prompt": opt(string(default="")),
        "hr_negative_prompt": opt(string(default="")),
    },
    title="StableDiffusionProcessingTxt2Img",
)

IMG2IMG_REQUEST = obj(
    {
        **_SHARED_FIELDS,
        "init_images": opt(arr(B64_IMAGE)),
        "resize_mode": opt(integer("0 just resize, 1 crop and resize", default=0, enum=[0, 1])),
        "image_cfg_scale": opt(number()),
        "mask": opt(string()),
        "mask_blur_x": opt(integer(default=4)),
        "mask_blur_y": opt(integer(default=4)),
        "mask_blur": opt(integer()),
        "mask_round": opt(boolean(default=True)),
        "inpainting_fill": opt(integer(default=0)),
        "inpaint_full_res": opt(boolean(default=True)),
        "inpaint_full_res_padding": opt(integer(default=0)),
        "inpainting_mask_invert": opt(integer(default=0)),
        "initial_noise_multiplier": opt(number()),
        "latent_mask": opt(string()),
        "include_init_images": opt(boolean(default=False)),
    },
    required=("init_images",),
    title="StableDiffusionProcessingImg2Img",
)

GENERATION_RESPONSE = obj(
    {
        "images": opt(arr(string("base64 PNG with a `parameters` text chunk"))),
        "parameters": obj({}, description="the request as understood, with defaults"),
        "info": string("a JSON string: seeds, infotexts, ... (A1111's Processed.js())"),
    },
    required=("images", "parameters", "info"),
)

OPENAI_REQUEST = obj(
    {
        "prompt": string(minLength=1),
        "n": opt(integer(default=1, minimum=1, maximum=8)),
        "size": opt(string('"WIDTHxHEIGHT"', default="512x512")),
        "response_format": opt(string(enum=["b64_json"], default="b64_json")),
        "seed": opt(integer()),
        "steps": opt(integer()),
        "cfg_scale": opt(number()),
        "negative_prompt": opt(string()),
        "sampler_name": opt(string()),
        "stream": opt(boolean(default=False)),
        "partial_images": opt(integer(default=0, minimum=0, maximum=3)),
    },
    required=("prompt",),
)
OPENAI_EDIT_REQUEST = obj(
    {
        "image": string("the image to edit (a file part; `image[]` too)", format="binary"),
        "mask": opt(
            string(
                "a PNG as large as the image: fully transparent where to edit (default: the image's own "
                "transparency)",
                format="binary",
            )  # fmt: skip
        ),
        "prompt": string(minLength=1),
        "n": opt(integer(default=1, minimum=1, maximum=8)),
        "size": opt(string('"auto" (the image\'s size) or "WIDTHxHEIGHT"', default="auto")),
        "response_format": opt(string(enum=["b64_json"], default="b64_json")),
        "seed": opt(integer()),
        "steps": opt(integer()),
        "cfg_scale": opt(number()),
        "negative_prompt": opt(string()),
        "sampler_name": opt(string()),
        "denoising_strength": opt(number(default=1.0, minimum=0, maximum=1)),
    },
    required=("image", "prompt"),
)
OPENAI_RESPONSE = obj(
    {
        "created": integer(),
        "data": arr(obj({"b64_json": string(), "seed": integer(), "revised_prompt": opt(string())})),
    },
    required=("created", "data"),
)
PROGRESS_RESPONSE = obj(
    {
        "progress": number(minimum=0, maximum=1),
        "eta_relative": number(),
        "state": obj({}, description="job, job_count, job_no, sampling_step, sampling_steps, ..."),
        "current_image": opt(string()),
        "textinfo": opt(string()),
        "current_task": opt(string()),
    },
    required=("progress", "eta_relative", "state"),
)
SAMPLER_ITEM = obj({"name": string(), "aliases": arr(string()), "options": obj({})})
SCHEDULER_ITEM = obj(
    {
        "name": string(),
        "label": string(),
        "aliases": opt(arr(string())),
        "default_rho": opt(number()),
        "need_inner_model": opt(boolean()),
    }
)
SD_MODEL_ITEM = obj(
    {
        "title": string(),
        "model_name": string(),
        "hash": opt(string()),
        "sha256": opt(string()),
        "filename": string(),
        "config": opt(string()),
    }
)


def _option_schema(kind: str, wire_float: bool) -> Schema:
    if kind == "bool":
        return boolean()
    if kind == "float" or wire_float:
        return number()
    if kind == "int":
        return integer()
    if kind == "list":
        return arr(string())
    if kind == "NoneType":
        return opt(string())
    return string()


# Every key of A1111 v1.10.1's options object, as GET /sdapi/v1/options sends it (knsd.serve.api.options).
OPTIONS = obj(
    {key: _option_schema(spec.type, spec.wire_float) for key, spec in option_specs().items()},
    required=tuple(option_specs()),
)
