"""Weight quantization of the denoiser (and SD 3.5's T5) through torchao: `--quantize none|int8|fp8`.

int8 is weight-only (`Int8WeightOnlyConfig`): weights stored as int8 with per-channel scales, computed in
the model's dtype; it runs on CPU and any CUDA GPU. fp8 quantizes weights and activations to float8 e4m3
(`Float8DynamicActivationFloat8WeightConfig`), which needs fp8 tensor cores: CUDA compute capability 8.9
or newer (Ada: L4, L40S, RTX 40xx; Hopper: H100, H200). Older GPUs (A100 = 8.0, T4, V100) and CPUs refuse.
"""

from __future__ import annotations

from typing import Any

from knsd.errors import ModelError, UsageError

MODES = ("none", "int8", "fp8")
FP8_CAPABILITY = (8, 9)


def check_quantize(mode: str, device: str) -> None:
    """Refuse an unknown mode, or fp8 where the device has no fp8 tensor cores, before any loading."""
    if mode not in MODES:
        raise UsageError("--quantize", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"--quantize {mode} needs torchao (pip install torchao)") from exc
    if mode == "fp8":
        import torch

        if device != "cuda":
            raise ModelError(
                "--quantize fp8 needs a CUDA GPU with compute capability >= 8.9 (L4, L40S, RTX 40xx, H100, H200); "
                f"this device is {device}. Use --quantize int8 here."
            )
        capability = torch.cuda.get_device_capability()
        if capability < FP8_CAPABILITY:
            name = torch.cuda.get_device_name()
            raise ModelError(
                f"--quantize fp8 needs CUDA compute capability >= 8.9 (L4, L40S, RTX 40xx, H100, H200); "
                f"{name} has {capability[0]}.{capability[1]}. Use --quantize int8 on this GPU."
            )


def quantize_pipeline(pipe: Any, family: Any, mode: str) -> list[str]:
    """Quantize the pipeline's denoiser (and T5, when present) in place; returns the quantized components."""
    if mode == "none":
        return []
    from torchao.quantization import quantize_

    if mode == "int8":
        from torchao.quantization import Int8WeightOnlyConfig

        config: Any = Int8WeightOnlyConfig()
    else:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    done = []
    # The CLIP encoders stay in full precision: quantizing CLIP-G hurt SD3 quality in diffusers' study.
    for name in (family.denoiser, "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            quantize_(module, config)
            done.append(name)
    return done
