"""What a running generation reports (A1111's `shared.state`) and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Progress:
    """What `/sdapi/v1/progress` reports; written by the worker thread, read by the event loop."""

    job: str = ""
    job_no: int = 0
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    started: float = 0.0
    interrupted: bool = False
    current_image: str | None = None  # the latest live preview, a base64 PNG (A1111's current_image)
    preview_id: int = 0  # counts previews, so a reader can tell a new one from the one it has
    # Called on the pipeline thread after every step and preview (a streamed request's wake-up).
    listener: Callable[[], None] | None = None

    def changed(self) -> None:
        """Tell the listener, if any, that the job moved on."""
        if self.listener is not None:
            self.listener()

    def fraction(self) -> float:
        """A1111's progress: 0.01 + job_no/job_count + step/steps/job_count, capped at 1."""
        if self.job_count == 0:
            return 0.0
        steps = max(self.sampling_steps, 1)
        done = 0.01 + self.job_no / self.job_count + self.sampling_step / steps / self.job_count
        return min(done, 1.0)


@dataclass(slots=True)
class Generation:
    """The images of one request, the infotext keys the run added (A1111's extra_generation_params, e.g.
    LoRA hashes) and the ControlNet units' detected maps (appended to the response, as the extension does)."""

    images: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    detected: list[Any] = field(default_factory=list)
