"""Per-tenant token buckets in Redis, shared by every gateway replica (one script per take)."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from knsd.gateway.keys import Keys
from knsd.gateway.tenants import TenantPolicy

# `burst` tokens at most, refilled at `rate` per second; a request takes one. Returns {1} or {0, wait}.
# KEYS bucket; ARGV rate, burst
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local ok = 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if ok == 1 then return {1, '0'} end
return {0, string.format('%.6f', (1 - tokens) / rate)}
"""


class RateLimiter:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._take = client.register_script(_TAKE)

    async def take(self, tenant: str, policy: TenantPolicy) -> int | None:
        """None when the request may go; else the whole seconds to wait (for `Retry-After`, at least 1)."""
        if policy.rate is None:
            return None
        ok, wait = await self._take(keys=[self.keys.bucket(tenant)], args=[policy.rate, policy.burst])
        if int(ok) == 1:
            return None
        return max(1, math.ceil(float(wait)))
