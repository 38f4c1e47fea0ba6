"""Building a family's diffusers pipelines from a folder or a single file, never touching the network."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.models.families import SD1, SD2, Family, family_of_folder
from knsd.serve.models.families.detect import Detected


def folder_family(path: Path) -> Family:
    """The family of a diffusers folder."""
    index = json.loads((path / "model_index.json").read_text())
    unet = path / "unet" / "config.json"
    return family_of_folder(index, json.loads(unet.read_text()) if unet.is_file() else None)


def config_for(detected: Detected, cache: Path) -> Path:
    """The config folder for a detected single file: a shipped standard one or an embedded tiny model."""
    from knsd.serve.models.families.standard import config_dir
    from knsd.serve.models.tiny import TINY_NAMES, ensure_tiny_model

    if detected.variant in TINY_NAMES:
        return ensure_tiny_model(cache, detected.variant)
    return config_dir(detected.variant, cache)


def _pipeline_class(family: Family, img2img: bool = False) -> Any:
    import diffusers

    return getattr(diffusers, family.img2img_class if img2img else family.txt2img_class)


def load_folder(path: Path, family: Family, dtype: Any) -> Any:
    """A diffusers folder, local files only."""
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if family in (SD1, SD2):
        kwargs["safety_checker"] = None  # knsd serves without it on purpose, like A1111
    return _pipeline_class(family).from_pretrained(str(path), **kwargs)


def load_single_file(path: Path, detected: Detected, config: Path, dtype: Any) -> Any:
    """A single file with its architecture's config folder (`config=` keeps diffusers off the Hub)."""
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "config": str(config)}
    family = detected.family
    if family in (SD1, SD2):
        kwargs["safety_checker"] = None
    if family.name == "sd3" and not detected.has_t5:
        # SD 3.5 release files hold no T5: run without it (the pipeline feeds zeros in its place).
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    return _pipeline_class(family).from_single_file(str(path), **kwargs)


def img2img_pipeline(family: Family, txt2img: Any) -> Any:
    """The family's img2img pipeline over the same modules (no copy of any weight)."""
    cls = _pipeline_class(family, img2img=True)
    accepted = set(inspect.signature(cls.__init__).parameters)
    pipe = cls(**{k: v for k, v in txt2img.components.items() if k in accepted})
    return pipe


def describe_failure(path: Path, exc: Exception, config_given: bool) -> ModelError:
    """One clear message for the many kinds of errors diffusers raises while loading."""
    if isinstance(exc, ModelError):  # knsd's own diagnosis (detection) already says what to do
        return ModelError(f"could not load {exc.message}")
    hint = "" if config_given else " (pass --model-config with a diffusers folder of the same architecture)"
    return ModelError(f"could not load {path}: {exc}{hint}")
