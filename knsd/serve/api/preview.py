"""Live previews: when a generation shows its image in the making, and how (pure).

A1111's options decide it (`modules/shared_options.py` @ v1.10.1): `live_previews_enable`,
`show_progress_every_n_steps` (N > 0: every N sampling steps; 0: every step; -1: only at the end of each
pass), `show_progress_type` (the method) and `show_progress_grid` (all images of the batch as a grid, or the
first). OpenAI's `partial_images` asks for a number of previews instead, spread over the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField

# A1111's methods: a linear map of the latent channels to RGB, the model's VAE, and two small networks
# whose weights A1111 downloads (knsd reads them from the model volume only).
METHODS = ("Full", "Approx NN", "Approx cheap", "TAESD")
WEIGHTED_METHODS = ("Approx NN", "TAESD")
MAX_PARTIAL_IMAGES = 3  # OpenAI's limit on `partial_images`


@dataclass(frozen=True, slots=True)
class PreviewPlan:
    """Which steps of a pass get a preview and how it is drawn; `method` "" means no previews."""

    method: str = ""
    every: int = 10  # A1111's show_progress_every_n_steps
    at: tuple[int, ...] = ()  # explicit steps (1-based, of the first pass) instead of `every`
    grid: bool = True
    field: str = "show_progress_type"  # the setting that chose `method`, for a 422 naming it

    @property
    def enabled(self) -> bool:
        return self.method != ""

    def due(self, step: int, steps: int) -> bool:
        """Whether the pass's `step` of `steps` (1-based, just finished) gets a preview."""
        if not self.enabled or step < 1:
            return False
        if self.at:
            return step in self.at
        if self.every == -1:
            return step >= steps
        return self.every == 0 or step % self.every == 0


def preview_plan(
    opts: dict[str, Any], overrides: Any = None, field: str = "override_settings"
) -> PreviewPlan:
    """The plan of merged generation options (`knsd.serve.api.policy`), range-checked.

    Errors name `override_settings.<key>` when the request's `override_settings` set the key, else the key.
    """
    given = overrides if isinstance(overrides, dict) else {}

    def name(key: str) -> str:
        return f"{field}.{key}" if field and key in given else key

    method = opts["show_progress_type"]
    if method not in METHODS:
        raise InvalidField(name("show_progress_type"), "one of " + ", ".join(METHODS), method)
    every = opts["show_progress_every_n_steps"]
    if every < -1:
        raise InvalidField(
            name("show_progress_every_n_steps"),
            "an integer: N > 0 for every N steps, 0 for every step, -1 for the end of each pass",
            every,
        )
    return PreviewPlan(
        method if opts["live_previews_enable"] else "",
        every,
        grid=opts["show_progress_grid"],
        field=name("show_progress_type"),
    )


def partial_images_plan(count: int, steps: int) -> PreviewPlan:
    """OpenAI's `partial_images`: `count` full VAE decodes of the first image, evenly spread over the steps
    before the last (fewer when there are fewer steps: OpenAI may also send the final image early)."""
    at = sorted({max(1, i * steps // (count + 1)) for i in range(1, count + 1)} - {steps})
    return PreviewPlan("Full" if at else "", at=tuple(at), grid=False) if count else PreviewPlan()
