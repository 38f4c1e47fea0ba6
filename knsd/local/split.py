"""The local route's traffic: the spec's targets resolved to revisions, the percent split and tag routing.

As Knative's Route (knative/serving `pkg/reconciler/route/traffic`): `@latest` follows the latest *ready*
revision; a split is programmed all or nothing, so while any target is missing or not ready the old split
keeps serving and the reason is reported with Knative's message. On the main route requests are split by
percent (smooth weighted round robin, so a 50/50 split alternates exactly; Knative's ingresses pick at
random); a request with `Knative-Serving-Tag: TAG` goes to that tag's revision (100 %), an unknown tag
falls through to the split, as with `tag-header-based-routing` enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.service.spec import ServiceSpec
from knsd.service.traffic import targets

TAG_HEADER = "Knative-Serving-Tag"
REVISION_HEADER = "X-Knsd-Revision"


@dataclass(frozen=True, slots=True)
class Target:
    """One programmed target (Knative's `status.traffic` entry)."""

    revision: str
    percent: int
    tag: str | None
    latest: bool

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revisionName": self.revision,
            "percent": self.percent,
            "latestRevision": self.latest,
        }
        if self.tag:
            out["tag"] = self.tag
        return out


def wanted(spec: ServiceSpec) -> list[dict[str, Any]]:
    """The spec's traffic; none given is Knative's default: 100 % to the latest revision."""
    return targets(spec.traffic, spec.tags) or [{"latestRevision": True, "percent": 100}]


def resolve(
    want: list[dict[str, Any]], ready: dict[str, bool], latest_ready: str | None, configuration: str
) -> tuple[list[Target] | None, str | None]:
    """(targets, None) when every target can be served, else (None, Knative's reason why not)."""
    out = []
    for t in want:
        if t.get("latestRevision") or not t.get("revisionName"):
            if latest_ready is None:
                return None, f'Configuration "{configuration}" is waiting for a Revision to become ready.'
            name, latest = latest_ready, True
        else:
            name, latest = t["revisionName"], False
            if name not in ready:
                return None, f'Revision "{name}" referenced in traffic not found.'
            if not ready[name]:
                return None, f'Revision "{name}" is not yet ready.'
        out.append(Target(name, int(t.get("percent") or 0), t.get("tag"), latest))
    return out, None


class Table:
    """A programmed route: the main split by percent, and one route per tag."""

    def __init__(self, programmed: list[Target]) -> None:
        self.targets = programmed
        self.weights: dict[str, int] = {}
        for t in programmed:
            if t.percent:  # the same revision twice: Knative adds the percents up
                self.weights[t.revision] = self.weights.get(t.revision, 0) + t.percent
        self.tags = {t.tag: t.revision for t in programmed if t.tag}
        self._current = dict.fromkeys(self.weights, 0)

    def revisions(self) -> set[str]:
        return {t.revision for t in self.targets}

    def percent(self, revision: str) -> int:
        return self.weights.get(revision, 0)

    def pick(self, tag: str | None = None) -> str | None:
        """The revision for the next request (None: nothing to route to)."""
        if tag and tag in self.tags:
            return self.tags[tag]
        if not self.weights:
            return None
        # Smooth weighted round robin (nginx's): exact proportions, evenly interleaved.
        total = sum(self.weights.values())
        for name, weight in self.weights.items():
            self._current[name] += weight
        best = max(self._current, key=self._current.__getitem__)
        self._current[best] -= total
        return best

    def to_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.targets]
