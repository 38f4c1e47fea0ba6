"""Tenants: bearer keys mapped to names, and each tenant's rate and queue limits (pure).

`--api-key NAME=KEY` (or a keys file of such lines) names the tenants; `--rate NAME=R/s`, `--burst NAME=N`
and `--max-queued NAME=N` set their limits, `*` standing for every tenant without a line of its own.
Without any key, authentication is off and every request belongs to the tenant `default`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

from knsd.errors import UsageError

ANONYMOUS = "default"
DEFAULT_MAX_QUEUED = 100
ANY = "*"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?$")
_PER = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """One tenant's limits: a token bucket (`rate` per second, `burst` deep; None = unlimited) and queue."""

    rate: float | None = None
    burst: int = 1
    max_queued: int = DEFAULT_MAX_QUEUED


@dataclass(frozen=True, slots=True)
class Tenants:
    """Who may call the gateway, and their limits."""

    key_hashes: dict[str, str] = field(default_factory=dict)  # sha256(key) hex -> tenant name
    policies: dict[str, TenantPolicy] = field(default_factory=dict)
    default: TenantPolicy = TenantPolicy()

    @property
    def auth_required(self) -> bool:
        return bool(self.key_hashes)

    def names(self) -> list[str]:
        return sorted(set(self.key_hashes.values())) if self.key_hashes else [ANONYMOUS]

    def authenticate(self, authorization: str | None) -> str | None:
        """The tenant of an `Authorization: Bearer KEY` header; None when it names none."""
        if not self.key_hashes:
            return ANONYMOUS
        if not authorization:
            return None
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        for known, name in self.key_hashes.items():  # compare every entry, in constant time each
            if hmac.compare_digest(known, digest):
                return name
        return None

    def policy(self, tenant: str) -> TenantPolicy:
        return self.policies.get(tenant, self.default)


def parse_rate(text: str, flag: str = "--rate") -> float:
    """`2/s`, `30/m`, `100/h` or a bare number (per second) -> requests per second (> 0)."""
    match = _RATE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(flag, f"expected a positive rate such as 2/s, 30/m or 100/h, got {text!r}")
    return float(match.group(1)) / _PER[match.group(2) or "s"]


def _pair(flag: str, item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise UsageError(flag, f"expected NAME=VALUE, got {item!r}")
    if name != ANY and not _NAME.match(name):
        raise UsageError(flag, f"a tenant name is letters, digits, '.', '_' or '-' (up to 63), got {name!r}")
    return name, value.strip()


def read_keys_file(path: Path) -> list[str]:
    """`NAME=KEY` lines of a keys file (a mounted Secret); blank lines and `#` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError("--api-keys-file", f"cannot read {path}: {exc.strerror or exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def build_tenants(
    api_keys: list[str],
    rates: list[str],
    bursts: list[str],
    max_queued: list[str],
) -> Tenants:
    """Tenants from the flags' NAME=VALUE items; every error names its flag."""
    hashes: dict[str, str] = {}
    for item in api_keys:
        name, key = _pair("--api-key", item)
        if name == ANY:
            raise UsageError("--api-key", "'*' is not a tenant name")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in hashes and hashes[digest] != name:
            raise UsageError("--api-key", f"tenants {hashes[digest]!r} and {name!r} have the same key")
        hashes[digest] = name
    known = set(hashes.values()) or {ANONYMOUS}
    rate_of = {name: parse_rate(value) for name, value in _named("--rate", rates, known)}
    burst_of = {name: _positive_int(value, "--burst") for name, value in _named("--burst", bursts, known)}
    queued_of = {
        name: _positive_int(value, "--max-queued")
        for name, value in _named("--max-queued", max_queued, known)
    }
    for name in burst_of:
        if name not in rate_of and ANY not in rate_of:
            raise UsageError("--burst", f"{name!r} has a burst but no --rate")

    def policy(name: str) -> TenantPolicy:
        rate = rate_of.get(name, rate_of.get(ANY))
        burst = burst_of.get(name, burst_of.get(ANY, max(1, round(rate)) if rate else 1))
        return TenantPolicy(rate, burst, queued_of.get(name, queued_of.get(ANY, DEFAULT_MAX_QUEUED)))

    return Tenants(hashes, {name: policy(name) for name in known}, policy(ANY))


def _named(flag: str, items: list[str], known: set[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, value = _pair(flag, item)
        if name != ANY and name not in known:
            raise UsageError(flag, f"no tenant {name!r} (tenants: {', '.join(sorted(known))}; '*' = all)")
        out.append((name, value))
    return out


def _positive_int(value: str, flag: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(flag, f"expected a whole number >= 1, got {value!r}")
    return number
