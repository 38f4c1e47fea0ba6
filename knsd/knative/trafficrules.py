"""Knative's admission rules for a Service's `spec.traffic` and its revision name, in Knative's wording.

Ported from knative/serving `pkg/apis/serving/v1/route_validation.go` (`validateTrafficList`,
`TrafficTarget.Validate` in a Service's context, where a default configuration name exists) and the
template-name checks of `service_validation.go`/`revision_validation.go`; Kubernetes' `IsDNS1035Label`
and `IsQualifiedName` messages from apimachinery `util/validation`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from knsd.knative.fielderror import FieldError, generic, out_of_bounds, with_prefix

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
MAX_LABEL = 63


def dns1035_messages(value: str) -> list[str]:
    """`validation.IsDNS1035Label`: empty when valid."""
    out = []
    if len(value) > MAX_LABEL:
        out.append(f"must be no more than {MAX_LABEL} characters")
    if not DNS1035.match(value):
        out.append(DNS1035_MSG)
    return out


def qualified_name_messages(value: str) -> list[str]:
    """`validation.IsQualifiedName` (the name part; a `prefix/` is checked for shape only)."""
    name = value.rpartition("/")[2]
    if not name:
        return ["name part must be non-empty"]
    out = []
    if len(name) > MAX_LABEL:
        out.append(f"name part must be no more than {MAX_LABEL} characters")
    if not QUALIFIED.match(name):
        out.append(QUALIFIED_MSG)
    return out


def _go_list(messages: Sequence[str]) -> str:
    """Go's `fmt.Sprint` of a []string: `[a b]`."""
    return "[" + " ".join(messages) + "]"


def _target_errors(target: dict[str, Any]) -> list[FieldError]:
    """`TrafficTarget.Validate` within a Service's spec (paths relative to the target)."""
    errors: list[FieldError] = []
    revision = target.get("revisionName") or ""
    latest = target.get("latestRevision")
    if latest is not None and bool(revision) == bool(latest):
        errors.append(
            generic(
                f'may not set revisionName "{revision}" when latestRevision is {str(bool(latest)).lower()}',
                "latestRevision",
            )
        )
    if target.get("configurationName"):
        errors.append(generic("must not set the field(s)", "configurationName"))
    elif revision:
        messages = qualified_name_messages(revision)
        if messages:
            errors.append(
                FieldError(f'invalid key name "{revision}"', ("revisionName",), ", ".join(messages))
            )
    percent = target.get("percent")
    if isinstance(percent, int) and not 0 <= percent <= 100:
        errors.append(out_of_bounds(percent, 0, 100, "percent"))
    if target.get("url"):
        errors.append(generic("must not set the field(s)", "url"))
    return errors


def traffic_errors(traffic: list[dict[str, Any]]) -> list[FieldError]:
    """`validateTrafficList` under `spec.traffic` of a Service."""
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    total = 0
    for i, target in enumerate(traffic):
        errors += [with_prefix(e, f"[{i}]") for e in _target_errors(target)]
        percent = target.get("percent")
        total += percent if isinstance(percent, int) else 0
        tag = target.get("tag") or ""
        if not tag:
            continue
        messages = dns1035_messages(tag)
        if messages:
            errors.append(
                FieldError(f"invalid value: not a DNS 1035 label: {_go_list(messages)}", (f"tag[{i}]",))
            )
        if tag in seen:
            errors.append(
                FieldError(f'Multiple definitions for "{tag}"', (f"[{i}].tag", f"[{seen[tag]}].tag"))
            )
        else:
            seen[tag] = i
    if total != 100:
        errors.append(FieldError(f"Traffic targets sum to {total}, want 100", ("",)))
    return [_via_traffic(e) for e in errors]


def _via_traffic(error: FieldError) -> FieldError:
    # ViaField("traffic") then ViaField("spec"): "[0].percent" -> "spec.traffic[0].percent".
    paths = tuple("spec.traffic" + (p if p.startswith("[") else f".{p}" if p else "") for p in error.paths)
    return FieldError(error.message, paths, error.details)


def template_name_errors(name: str, service: str) -> list[FieldError]:
    """A revision name given in `spec.template.metadata.name` (bring your own name)."""
    path = "spec.template.metadata.name"
    messages = dns1035_messages(name)
    if messages:
        return [FieldError(f"invalid value: not a DNS 1035 label: {_go_list(messages)}", (path,))]
    if not name.startswith(service + "-"):
        return [FieldError(f'invalid value: "{name}" must have prefix "{service}-"', (path,))]
    return []
