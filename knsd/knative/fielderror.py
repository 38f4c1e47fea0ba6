"""knative.dev/pkg `apis.FieldError`: how Knative's validation errors are merged and printed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One error: a message, the paths it applies to, optional details."""

    message: str
    paths: tuple[str, ...]
    details: str = ""


def invalid_value(value: object, path: str) -> FieldError:
    """`apis.ErrInvalidValue`."""
    return FieldError(f"invalid value: {value}", (path,))


def out_of_bounds(value: object, lower: object, upper: object, path: str) -> FieldError:
    """`apis.ErrOutOfBoundsValue`."""
    return FieldError(f"expected {lower} <= {value} <= {upper}", (path,))


def generic(message: str, *paths: str) -> FieldError:
    """`apis.ErrGeneric` / a literal `&apis.FieldError{...}`."""
    return FieldError(message, tuple(paths))


def with_prefix(error: FieldError, prefix: str) -> FieldError:
    """`ViaField`: the same error under a parent path."""
    return FieldError(
        error.message, tuple(f"{prefix}.{p}" if p else prefix for p in error.paths), error.details
    )


def render(errors: Iterable[FieldError]) -> str:
    """`FieldError.Error()`: same message and details merged (paths sorted), sorted, one per line."""
    merged: dict[tuple[str, str], list[str]] = {}
    for error in errors:
        merged.setdefault((error.message, error.details), []).extend(error.paths)
    lines = []
    for (message, details), paths in sorted(merged.items()):
        line = f"{message}: {', '.join(sorted(paths))}"
        lines.append(f"{line}\n{details}" if details else line)
    return "\n".join(lines)
