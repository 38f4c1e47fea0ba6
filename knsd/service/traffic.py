"""kn's traffic flags (`--traffic REF=PCT`, `--tag REF=TAG`, `--untag TAG`) and the Service's `spec.traffic`.

Parsing and errors follow knative/client `pkg/commands/flags/traffic.go` and `pkg/traffic/compute.go`
(kn's wording); the targets are those `kn service create/update` would send. A REF is `@latest`, a
revision name, or a tag given with `--tag` (a tag wins over a revision of the same name).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from knsd.errors import UsageError

LATEST = "@latest"


def _split(values: Iterable[str]) -> list[str]:
    """Repeatable flags that also take comma lists."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def parse_traffic(values: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """`--traffic` values to (REF, PERCENT); a bare PCT means `@latest=PCT`, a trailing % is dropped."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for item in _split(values):
        parts = item.split("=")
        if len(parts) > 2:
            raise UsageError("--traffic", f"expecting the value format in value1=value2, given {item}")
        ref, pct = (LATEST, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        pct = pct.removesuffix("%")
        try:
            percent = int(pct)
        except ValueError:
            raise UsageError(
                "--traffic", f"error converting given {pct} to integer value for traffic distribution"
            ) from None
        if not 0 <= percent <= 100:
            raise UsageError(
                "--traffic", f"invalid value for traffic percent {percent}, expected 0 <= percent <= 100"
            )
        if ref in seen:
            what = "identifier" if ref == LATEST else "revision reference"
            raise UsageError(
                "--traffic",
                f"repetition of {what} {ref} is not allowed, use only once with --traffic flag",
            )
        seen.add(ref)
        out.append((ref, percent))
    total = sum(p for _, p in out)
    if total > 100:
        raise UsageError("--traffic", f"given traffic percents sum to {total}, want <=100")
    return tuple(out)


def parse_tags(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`--tag REF=TAG` values; `@latest` may be tagged once."""
    out: list[tuple[str, str]] = []
    for item in _split(values):
        parts = item.split("=")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise UsageError("--tag", f"expecting the value format in value1=value2, given {item}")
        if parts[0] == LATEST and any(ref == LATEST for ref, _ in out):
            raise UsageError(
                "--tag", "repetition of identifier @latest is not allowed, use only once with --tag flag"
            )
        out.append((parts[0], parts[1]))
    return tuple(out)


def untag(
    tags: tuple[tuple[str, str], ...], names: Iterable[str], service: str
) -> tuple[tuple[str, str], ...]:
    """Remove the tags `names` (kn: untag first); unknown ones are an error in kn's words."""
    wanted = _split(names)
    present = {tag for _, tag in tags}
    missing = [n for n in wanted if n not in present]
    if missing:
        raise UsageError(
            "--untag", f"tag(s) {', '.join(missing)} not present for any revisions of service {service}"
        )
    return tuple((ref, tag) for ref, tag in tags if tag not in wanted)


def _target(ref: str, percent: int, tag: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tag:
        out["tag"] = tag
    if ref == LATEST:
        out["latestRevision"] = True
    else:
        out["revisionName"] = ref
        out["latestRevision"] = False
    out["percent"] = percent
    return out


def targets(traffic: tuple[tuple[str, int], ...], tags: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """The Service's `spec.traffic` (empty: Knative's default, 100 % to the latest revision).

    As kn: `--tag` alone implies `@latest=100`; a REF naming a tag means that tag's revision; extra tags on
    one revision become 0 % targets; untagged 0 % targets are dropped.
    """
    if not traffic and not tags:
        return []
    split = traffic or ((LATEST, 100),)
    tag_ref = {tag: ref for ref, tag in tags}
    pending = list(tags)
    out: list[dict[str, Any]] = []
    for ref, percent in split:
        tag = None
        if ref in tag_ref:  # a tag wins over a revision of the same name
            tag, ref = ref, tag_ref[ref]
        else:
            tag = next((t for r, t in pending if r == ref), None)
        if tag is not None:
            pending.remove((ref, tag))
        out.append(_target(ref, percent, tag))
    for ref, tag in pending:
        out.append(_target(ref, 0, tag))
    return [t for t in out if t.get("tag") or t["percent"]]
