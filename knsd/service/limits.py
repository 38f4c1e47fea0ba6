"""Request limits that `knsd serve` and what stands in front of its pods (the local route) share."""

from __future__ import annotations

MAX_BODY_MB = 32  # `knsd serve --max-body-mb` by default; the local runtime runs its pods with it
MAX_BODY_BYTES = MAX_BODY_MB * 1024 * 1024  # a body of this size is accepted, one byte more is a 413
