"""A pipeline from one checkpoint file's tensors, with no copy of a weight that is already in the served dtype.

Two ways in, one result:
- `from_original`: an original-layout checkpoint (A1111/Civitai `model.diffusion_model.*` keys) is
  converted component by component with diffusers' own single-file converters (the ones
  `from_single_file` uses), handed tensors that are already views of the file or cast copies of them;
- `from_converted`: a file written by `converted_state` holds every component's weights in diffusers'
  layout under `<component>.` prefixes; the modules are built on the meta device (no random init) and the
  file's tensors are assigned to them as they are.
Schedulers and tokenizers come from the config folder either way.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.models.families import SD1, SD2
from knsd.serve.models.families.detect import Detected

# Tensors of an original checkpoint no component reads (A1111 files may carry the EMA copy of the UNet).
UNUSED_PREFIXES = ("model_ema.",)


def _plan(config: Path, detected: Detected) -> tuple[str, dict[str, tuple[str, str] | None], dict[str, Any]]:
    """The pipeline class name, its components (library, class; None when not loaded) and init flags."""
    index = json.loads((config / "model_index.json").read_text())
    components: dict[str, tuple[str, str] | None] = {}
    flags: dict[str, Any] = {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            components[name] = (str(value[0]), str(value[1])) if value[0] is not None else None
        else:
            flags[name] = value
    if detected.family in (SD1, SD2):  # served without the safety checker on purpose, like A1111
        components.update(safety_checker=None, feature_extractor=None)
        flags["requires_safety_checker"] = False
    if detected.family.name == "sd3" and not detected.has_t5:
        components.update(text_encoder_3=None, tokenizer_3=None)  # release files without T5
    return str(index["_class_name"]), components, flags


def _pipeline(class_name: str, parts: dict[str, Any], flags: dict[str, Any]) -> Any:
    import diffusers

    cls = getattr(diffusers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(**{k: v for k, v in {**flags, **parts}.items() if k in accepted})


def _config_only(library: str, class_name: str, folder: Path) -> Any:
    """A scheduler or tokenizer, from its config folder."""
    import diffusers
    import transformers

    cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
    return cls.from_pretrained(str(folder))


def _is_module(library: str, class_name: str) -> bool:
    return not ("Scheduler" in class_name or "Tokenizer" in class_name)


def from_original(config: Path, detected: Detected, checkpoint: dict[str, Any], dtype: Any) -> Any:
    """Convert an original-layout checkpoint's tensors into the pipeline (diffusers' converters)."""
    import diffusers.pipelines
    from diffusers.loaders.single_file import load_single_file_sub_model

    class_name, components, flags = _plan(config, detected)
    parts: dict[str, Any] = {}
    for name, spec in sorted(components.items()):
        if spec is None:
            parts[name] = None
            continue
        library, cls = spec
        if not _is_module(library, cls):
            parts[name] = _config_only(library, cls, config / name)
            continue
        parts[name] = load_single_file_sub_model(
            library_name=library,
            class_name=cls,
            name=name,
            checkpoint=checkpoint,
            pipelines=diffusers.pipelines,
            is_pipeline_module=hasattr(diffusers.pipelines, library),
            cached_model_config_path=str(config),
            local_files_only=True,
            torch_dtype=dtype,
        )
    return _pipeline(class_name, parts, flags)


def _empty(library: str, class_name: str, folder: Path) -> Any:
    """The module built from its config on the meta device: no memory, no random initialisation."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    if library == "diffusers":
        cls = getattr(diffusers, class_name)
        with init_empty_weights():
            return cls.from_config(cls.load_config(str(folder)))
    cls = getattr(transformers, class_name)
    config = cls.config_class.from_pretrained(str(folder))
    with init_empty_weights():
        return cls(config)


def from_converted(config: Path, detected: Detected, tensors: dict[str, Any]) -> Any:
    """Assign a converted file's tensors to modules built on the meta device (no copy, no cast)."""
    class_name, components, flags = _plan(config, detected)
    by_component: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        component, _, name = key.partition(".")
        by_component.setdefault(component, {})[name] = tensor
    parts: dict[str, Any] = {}
    for name, spec in sorted(components.items()):
        if spec is None:
            parts[name] = None
            continue
        library, cls = spec
        if not _is_module(library, cls):
            parts[name] = _config_only(library, cls, config / name)
            continue
        module = _empty(library, cls, config / name)
        module.load_state_dict(by_component.get(name, {}), strict=False, assign=True)
        if hasattr(module, "tie_weights"):  # T5's embedding is stored once, under one of its names
            module.tie_weights()
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise ModelError(f"converted weights lack {name}.{left[0]} (and {len(left) - 1} more)")
        parts[name] = module.eval()  # requires_grad as from_pretrained leaves it: the same kernels run
    return _pipeline(class_name, parts, flags)


def converted_state(pipe: Any) -> dict[str, Any]:
    """Every module's weights under `<component>.` prefixes, each storage once (tied weights share one)."""
    import torch

    out: dict[str, Any] = {}
    seen: set[tuple[int, int]] = set()
    for component, module in sorted(pipe.components.items()):
        if not isinstance(module, torch.nn.Module):
            continue
        for key, tensor in module.state_dict(keep_vars=False).items():
            ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            if ident in seen and tensor.numel():
                continue
            seen.add(ident)
            out[f"{component}.{key}"] = tensor
    return out


def wanted_names(names: Iterable[str]) -> list[str]:
    """The checkpoint's tensor names without those no component reads."""
    return [k for k in names if not k.startswith(UNUSED_PREFIXES)]
