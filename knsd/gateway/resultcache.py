"""The exact-match result cache in Redis: response bytes by cache key, with a TTL and a bound in bytes.

Values live in one hash, their store times in a sorted set; a store evicts what is past the TTL and then the
oldest entries until the total fits `max_bytes`, in one script. A lookup ignores an entry past its TTL.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from knsd.gateway.keys import Keys
from knsd.gateway.scripts import CLOCK
from knsd.gateway.store import as_bytes

# KEYS values, index; ARGV name, ttl_ms
_GET = (
    CLOCK
    + """
local stored = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not stored) or tonumber(stored) + tonumber(ARGV[2]) < now_ms() then return false end
return redis.call('HGET', KEYS[1], ARGV[1])
"""
)

# KEYS values, index, bytes; ARGV name, value, ttl_ms, max_bytes
_PUT = (
    CLOCK
    + """
local function evict(name)
  local size = redis.call('HSTRLEN', KEYS[1], name)
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
  if size > 0 then redis.call('DECRBY', KEYS[3], size) end
end
local now = now_ms()
evict(ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('INCRBY', KEYS[3], string.len(ARGV[2]))
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 64)) do
  evict(name)
end
while tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[4]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  evict(oldest[1])
end
return 1
"""
)


class ResultCache:
    """Cached response bodies; `max_item` larger ones are not stored."""

    def __init__(self, client: aioredis.Redis, keys: Keys, ttl: float, max_bytes: int, max_item: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_ms = int(ttl * 1000)
        self.max_bytes = max_bytes
        self.max_item = max_item
        self._get = client.register_script(_GET)
        self._put = client.register_script(_PUT)

    async def get(self, key: str) -> bytes | None:
        value = await self._get(keys=[self.keys.cache_values, self.keys.cache_index], args=[key, self.ttl_ms])
        return None if value is None else bytes(value)

    async def put(self, key: str, value: bytes) -> bool:
        if len(value) > self.max_item:
            return False
        k = self.keys
        await self._put(
            keys=[k.cache_values, k.cache_index, k.cache_bytes],
            args=[key, value, self.ttl_ms, self.max_bytes],
        )
        return True

    async def size(self) -> tuple[int, int]:
        """(entries, bytes) held now."""
        entries = await self.redis.zcard(self.keys.cache_index)
        total = await self.redis.get(self.keys.cache_bytes)
        return int(entries), int(total or 0)

    async def model(self) -> str | None:
        """The upstream's model as last seen, while it is trusted."""
        value = await self.redis.get(self.keys.model)
        return None if value is None else as_bytes(value).decode()

    async def set_model(self, model: str, ttl: float) -> None:
        await self.redis.set(self.keys.model, model, px=int(ttl * 1000))
