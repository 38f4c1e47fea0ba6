"""Third-party libraries at start-up: skip integrations the served model does not use, and drop the
warnings a user cannot act on, each at its source (a filter on the logger that emits it), never by
silencing a whole library or knsd's own logging.

diffusers and transformers import every optional integration that is installed: torchao (~0.4 s, its CUDA
kernel notices on a CPU machine, and torch pytree deprecations from its enums) and peft (~0.5 s). knsd serve
quantizes through torchao only with `--quantize`, and never uses peft (LoRAs are merged by knsd's own
patcher), so `skip_unused` marks them absent in `sys.modules` before those libraries look for them; Python
then reports them as not installed (`importlib.util.find_spec` gives None, `import` raises ImportError).
"""

from __future__ import annotations

import logging
import sys

# logger name -> substrings of messages that say nothing a user of knsd can act on
NOISE: dict[str, tuple[str, ...]] = {
    # torchao's optional CUDA/cutlass kernels on a machine without them, and its Triton kernels
    "torchao": ("Failed to load",),
    "torchao.kernel.intmm": ("Detected no triton",),
    # torch's notice that enums registered by libraries (torchao) are deprecated pytree constants
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    # transformers falling back to its PIL image processors (the safety checker's, unused by knsd)
    "transformers.utils.import_utils": ("requires torchvision (not installed)",),
    # diffusers' notice when torchao's serialized tensor classes are missing (loading torchao checkpoints)
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
}


class DropMessages(logging.Filter):
    """Drops records whose message contains one of `needles`."""

    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        return not any(needle in message for needle in self.needles)


def quiet_third_party() -> None:
    """Install the filters of NOISE on their loggers (idempotent)."""
    for name, needles in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(needles))


def skip_unused(quantize: str) -> list[str]:
    """Mark integrations `knsd serve` will not use as absent, unless already imported; returns them."""
    unused = ["peft"] + (["torchao"] if quantize == "none" else [])
    hidden = [name for name in unused if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    return hidden
