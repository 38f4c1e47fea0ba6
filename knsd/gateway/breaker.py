"""The circuit breaker on the upstream, its state in Redis so every replica sees the same one.

closed --(N consecutive failures: 502, 503, 504 or no connection)--> open --(after `open_for`)--> half-open:
one replica probes the upstream (`GET probe_path`); an answer below 500 closes the breaker, anything else
opens it again. While it is open synchronous requests are answered 503 at once with `Retry-After`, and
queued jobs stay queued: no worker takes a job until it closes. An upstream answer that arrives while it is
open (a request sent before it opened) closes it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from knsd.gateway.keys import Keys
from knsd.gateway.scripts import CLOCK

State = Literal["closed", "open", "half_open"]
STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# KEYS breaker; ARGV ok (0/1), threshold, channel
_RECORD = (
    CLOCK
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'failures', 0)
  if state ~= 'closed' then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('PUBLISH', ARGV[3], 'breaker closed')
  end
  return 'closed'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if state == 'closed' and failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened', now_ms())
  redis.call('PUBLISH', ARGV[3], 'breaker open')
  return 'open'
end
return state
"""
)

# May a worker dispatch? KEYS breaker; ARGV open_ms, token, probe_lease_ms, channel
# -> {'closed'} | {'open', ms_left} | {'probe'} (this caller probes) | {'half_open', ms_left}
_ALLOW = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened', 'probe_until')
local state = h[1] or 'closed'
if state == 'closed' then return {'closed', 0} end
local now = now_ms()
if state == 'open' then
  local left = tonumber(h[2] or '0') + tonumber(ARGV[1]) - now
  if left > 0 then return {'open', left} end
elseif tonumber(h[3] or '0') > now then
  return {'half_open', tonumber(h[3]) - now}
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe', ARGV[2], 'probe_until', now + tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], 'breaker half_open')
return {'probe', 0}
"""
)

# KEYS breaker; ARGV token, ok (0/1), channel
_PROBED = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'probe')
if h[1] ~= 'half_open' or h[2] ~= ARGV[1] then return h[1] or 'closed' end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
  redis.call('PUBLISH', ARGV[3], 'breaker closed')
  return 'closed'
end
redis.call('HSET', KEYS[1], 'state', 'open', 'opened', now_ms())
redis.call('PUBLISH', ARGV[3], 'breaker open')
return 'open'
"""
)

# KEYS breaker; ARGV open_ms -> {state, ms until a probe may run}
_PEEK = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened')
local state = h[1] or 'closed'
if state ~= 'open' then return {state, 0} end
return {state, math.max(0, tonumber(h[2] or '0') + tonumber(ARGV[1]) - now_ms())}
"""
)


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # closed | open | half_open | probe
    wait: float  # seconds until it may change


class Breaker:
    def __init__(
        self, client: aioredis.Redis, keys: Keys, failures: int, open_for: float, probe_lease: float
    ) -> None:
        self.keys = keys
        self.failures = failures
        self.open_ms = int(open_for * 1000)
        self.probe_lease_ms = int(probe_lease * 1000)
        self._record = client.register_script(_RECORD)
        self._allow = client.register_script(_ALLOW)
        self._probed = client.register_script(_PROBED)
        self._peek = client.register_script(_PEEK)

    async def record(self, ok: bool) -> str:
        """Count an upstream answer (ok) or failure; the state after it."""
        reply = await self._record(keys=[self.keys.breaker], args=[int(ok), self.failures, self.keys.events])
        return bytes(reply).decode()

    async def allow(self, token: str) -> Verdict:
        state, left = await self._allow(
            keys=[self.keys.breaker], args=[self.open_ms, token, self.probe_lease_ms, self.keys.events]
        )
        return Verdict(bytes(state).decode(), int(left) / 1000)

    async def probed(self, token: str, ok: bool) -> str:
        reply = await self._probed(keys=[self.keys.breaker], args=[token, int(ok), self.keys.events])
        return bytes(reply).decode()

    async def peek(self) -> Verdict:
        state, left = await self._peek(keys=[self.keys.breaker], args=[self.open_ms])
        return Verdict(bytes(state).decode(), int(left) / 1000)
