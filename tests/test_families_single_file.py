"""Single files of every family (A1111/Civitai layout) load offline with no --model-config."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from knsd.bench.ldm import pipeline_to_ldm, sd3_to_ldm, sdxl_to_ldm
from knsd.errors import ModelError
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from knsd.serve.models.families.detect import detect, read_shapes
from knsd.serve.models.loader import load_model

REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 3, "seed": 5}
WRITERS = {"tiny": pipeline_to_ldm, "tiny-sdxl": sdxl_to_ldm, "tiny-sd3": sd3_to_ldm}


def _pixels(model: Any) -> np.ndarray:
    return np.asarray(Engine(model).generate(parse_txt2img(REQUEST, 1 << 30)).images[0])


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl", "tiny-sd3"])
def test_single_file_loads_offline_and_matches_the_folder(name: str, cache: Path, tmp_path: Path) -> None:
    folder = load_model(name, cache, device="cpu")
    path = tmp_path / f"{name}.safetensors"
    save_file(WRITERS[name](folder.txt2img), str(path))
    single = load_model(str(path), cache, device="cpu")  # no config: detected from keys and shapes
    assert single.family == folder.family
    assert single.source.kind == "single_file" and single.loaded_from == "original"
    assert single.title == f"{name}.safetensors"  # A1111's title before the file is hashed
    sha = single.wait_hash(60)  # hashed, then the converted weights kept beside the file
    assert sha is not None and single.title == f"{name}.safetensors [{sha[:10]}]"
    assert single.after_ready is not None and single.after_ready.saved is not None
    assert single.after_ready.saved.parent == tmp_path / ".knsd"
    expected = _pixels(folder)
    assert np.array_equal(_pixels(single), expected)
    again = load_model(str(path), cache, device="cpu")  # a later start: the converted weights as they are
    assert again.loaded_from == "converted" and again.sha256 == sha
    assert np.array_equal(_pixels(again), expected)


def test_ckpt_is_read_weights_only(pristine_tiny_model: Any, cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": pipeline_to_ldm(pristine_tiny_model.txt2img), "global_step": 470000}, path)
    model = load_model(str(path), cache, device="cpu")
    assert model.family.name == "sd1" and np.array_equal(_pixels(model), _pixels(pristine_tiny_model))


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("code ran while unpickling",))


def test_ckpt_with_code_is_refused(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"x": _Exploit()}}, fh)
    with pytest.raises(ModelError, match="weights only"):
        load_model(str(path), cache, device="cpu")


def test_sd3_file_without_t5(cache: Path, tmp_path: Path) -> None:
    folder = load_model("tiny-sd3", cache, device="cpu")
    path = tmp_path / "sd3.5_tiny.safetensors"
    save_file(sd3_to_ldm(folder.txt2img, with_t5=False), str(path))
    model = load_model(str(path), cache, device="cpu")
    assert len(model.text_encoders) == 2 and model.txt2img.text_encoder_3 is None
    assert _pixels(model).shape == (64, 64, 3)


def _shapes(**extra: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    unet = "model.diffusion_model."
    return {unet + "input_blocks.0.0.weight": (320, 4, 3, 3), **extra}


@pytest.mark.parametrize(
    ("shapes", "variant"),
    [
        (_shapes(), "sd15"),
        (_shapes(**{"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}), "sd21-v"),
        (_shapes(**{"conditioner.embedders.1.model.positional_embedding": (77, 1280)}), "sdxl-base"),
        ({"model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight": (4608, 1536),
          "model.diffusion_model.x_embedder.proj.weight": (1536, 16, 2, 2)}, "sd35-medium"),
        ({"model.diffusion_model.joint_blocks.37.x_block.mlp.fc1.weight": (9728, 2432),
          "model.diffusion_model.x_embedder.proj.weight": (2432, 16, 2, 2)}, "sd35-large"),
    ],
)  # fmt: skip
def test_detection_of_the_standard_architectures(shapes: dict[str, tuple[int, ...]], variant: str) -> None:
    assert detect(Path("model.safetensors"), shapes).variant == variant


def test_sd2_sidecar_yaml_picks_epsilon_or_v(tmp_path: Path) -> None:
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    path = tmp_path / "v2-1_512-ema-pruned.safetensors"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect(path, _shapes(**{key: (320, 1024)})).variant == "sd21-base"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert detect(path, _shapes(**{key: (320, 1024)})).variant == "sd21-v"


def test_unknown_files_are_clear_errors(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(path))
    assert read_shapes(path) == {"lora_unet_down.weight": (2,)}
    with pytest.raises(ModelError, match="no Stable Diffusion UNet or MMDiT"):
        load_model(str(path), cache, device="cpu")
    instruct = _shapes(**{"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)})
    with pytest.raises(ModelError, match="8-channel"):
        detect(path, instruct)


@pytest.mark.parametrize(
    ("variant", "component", "millions"),
    [("sd15", "unet", 859.52), ("sd21-v", "text_encoder", 340.39), ("sdxl-base", "unet", 2567.46),
     ("sdxl-base", "text_encoder_2", 694.66), ("sd35-medium", "transformer", 2243.17),
     ("sd35-large", "transformer", 8056.63)],
)  # fmt: skip
def test_shipped_configs_have_the_published_sizes(
    variant: str, component: str, millions: float, cache: Path
) -> None:
    """The package-data configs build the real architectures (parameter counts of the released models)."""
    import json

    import diffusers
    import transformers
    from accelerate import init_empty_weights

    from knsd.serve.models.families.standard import config_dir

    folder = config_dir(variant, cache)
    library, cls_name = json.loads((folder / "model_index.json").read_text())[component]
    with init_empty_weights():  # shapes only, no memory
        if library == "diffusers":
            cls = getattr(diffusers, cls_name)
            model = cls.from_config(cls.load_config(str(folder), subfolder=component))
        else:
            cls = getattr(transformers, cls_name)
            model = cls(cls.config_class.from_pretrained(str(folder / component)))
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.01)
