"""A family's full-size architecture with random weights, built in memory from the shipped configs.

Timings do not depend on weight values, so capacity planning needs no download. Modules are created on the
`meta` device and each parameter is then filled once (normal, std 0.02; norms 1, biases 0): much faster than
PyTorch's default initialisers on a 2.6 B-parameter UNet, and the activations stay finite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FULL_SIZE = {
    "sd1": "sd15",
    "sd2": "sd21-v",
    "sdxl": "sdxl-base",
    "sd3": "sd35-medium",
    "sd3-large": "sd35-large",
}


def _fill(module: Any, dtype: Any, seed: int) -> Any:
    import torch
    from accelerate.utils import set_module_tensor_to_device

    generator = torch.Generator().manual_seed(seed)
    for name, param in list(module.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            value = torch.zeros(param.shape, dtype=dtype)
        elif param.ndim == 1:  # norm scales
            value = torch.ones(param.shape, dtype=dtype)
        else:
            value = (
                torch.empty(param.shape, dtype=torch.float32)
                .normal_(0.0, 0.02, generator=generator)
                .to(dtype)
            )
        set_module_tensor_to_device(module, name, "cpu", value=value, dtype=dtype)
    if hasattr(module, "tie_weights"):  # T5's `shared` and `encoder.embed_tokens` are one tensor
        module.tie_weights()
    return module.eval()


def _component(config: Path, name: str, library: str, cls_name: str, dtype: Any, seed: int) -> Any:
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    if library == "transformers":
        cls = getattr(transformers, cls_name)
        if "Tokenizer" in cls_name:
            return transformers.AutoTokenizer.from_pretrained(str(config / name))
        model_config = cls.config_class.from_pretrained(str(config / name))
        with init_empty_weights():
            model = cls(model_config)
        return _fill(model, dtype, seed)
    cls = getattr(diffusers, cls_name)
    if "Scheduler" in cls_name:
        return cls.from_pretrained(str(config), subfolder=name)
    with init_empty_weights():
        model = cls.from_config(cls.load_config(str(config), subfolder=name))
    return _fill(model, dtype, seed)


def random_pipeline(variant: str, cache: Path, dtype: Any, with_t5: bool = True) -> Any:
    """The pipeline of a standard architecture (`sd15`, `sdxl-base`, `sd35-medium`, ...) with random weights."""
    import diffusers

    from knsd.serve.models.families.standard import config_dir

    config = config_dir(variant, cache)
    index = json.loads((config / "model_index.json").read_text())
    components: dict[str, Any] = {}
    for seed, (name, spec) in enumerate(sorted(index.items())):
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if name.endswith("_3") and not with_t5:
            components[name] = None
            continue
        components[name] = _component(config, name, spec[0], spec[1], dtype, seed)
    cls = getattr(diffusers, index["_class_name"])
    if "safety_checker" in index:
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return cls(**components)
