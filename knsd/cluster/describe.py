"""`knsd status NAME` for a cluster Service, in `kn service describe`'s layout (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

GLYPHS = {"True": "++", "False": " !", "Unknown": "??"}


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")


def short_duration(seconds: float) -> str:
    """Kubernetes' ShortHumanDuration: 45s, 2m, 3h, 5d, 2y."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    if s < 86400 * 365:
        return f"{s // 86400}d"
    return f"{s // (86400 * 365)}y"


def _age(ts: str | None, now: datetime) -> str:
    when = _parse(ts)
    return short_duration((now - when).total_seconds()) if when else ""


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def describe(svc: dict[str, Any], pods: list[dict[str, Any]], now: datetime | None = None) -> str:
    """Name, URL, revisions with traffic, conditions, then the pods and their readiness."""
    now = now or datetime.now(UTC)
    meta, status = svc.get("metadata") or {}, svc.get("status") or {}
    lines = [
        f"Name:       {meta.get('name')}",
        f"Namespace:  {meta.get('namespace')}",
        f"Age:        {_age(meta.get('creationTimestamp'), now)}",
        f"URL:        {status.get('url', '')}",
        "",
        "Revisions:",
    ]
    image = ""
    containers = (((svc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if containers:
        image = containers[0].get("image", "")
    traffic = status.get("traffic") or []
    shown = traffic or ([{"revisionName": status["latestReadyRevisionName"], "percent": 0, "latestRevision": True}]
                        if status.get("latestReadyRevisionName") else [])  # fmt: skip
    for target in shown:
        revision = target.get("revisionName", "")
        header = f"@latest ({revision})" if target.get("latestRevision") else revision
        if target.get("tag"):
            header += f" #{target['tag']}"
        percent = target.get("percent", 0)
        bullet = f"{percent:3d}%" if percent else "   +"
        rev_pods = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("serving.knative.dev/revision") == revision
        ]
        ready = sum(1 for p in rev_pods if _pod_ready(p))
        lines.append(f"  {bullet}  {header} [{meta.get('generation', 1)}]")
        lines.append(f"        Image:     {image}")
        lines.append(f"        Replicas:  {ready}/{len(rev_pods)}")
    lines += ["", "Conditions:"]
    conditions = sorted(
        status.get("conditions") or [], key=lambda c: (c.get("type") != "Ready", c.get("type", ""))
    )
    width = max([len("TYPE")] + [len(c.get("type", "")) for c in conditions])
    lines.append(f"  OK {'TYPE':<{width}} {'AGE':>6} REASON")
    for c in conditions:
        glyph = GLYPHS.get(c.get("status", "Unknown"), "??")
        reason = c.get("reason", "")
        if c.get("status") != "True" and c.get("message"):
            reason = f"{reason} ({c['message']})"
        lines.append(
            f"  {glyph} {c.get('type', ''):<{width}} {_age(c.get('lastTransitionTime'), now):>6} {reason}".rstrip()
        )
    lines += ["", "Pods:"]
    if not pods:
        lines.append("  (none: scaled to zero)")
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase", "")
        lines.append(
            f"  {pod['metadata']['name']:<40} {'ready' if _pod_ready(pod) else 'not ready':<10} {phase}"
        )
    return "\n".join(lines)
