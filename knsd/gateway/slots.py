"""Upstream requests in flight, bounded across every replica: a semaphore of leased slots in Redis.

A slot is a token with a lease; its holder renews the lease while the request runs, and a replica that dies
leaves slots that expire after the lease, so the bound never shrinks for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import redis.asyncio as aioredis

from knsd.gateway.keys import Keys
from knsd.gateway.scripts import CLOCK

# KEYS slots; ARGV token, limit, lease_ms -> 1 taken (or renewed), 0 all taken
_ACQUIRE = (
    CLOCK
    + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""
)

# KEYS slots; ARGV token, lease_ms -> 1 still held, 0 lost (expired and taken)
_RENEW = (
    CLOCK
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)


class Slots:
    def __init__(self, client: aioredis.Redis, keys: Keys, owner: str, limit: int, lease: float) -> None:
        self.redis = client
        self.keys = keys
        self.owner = owner
        self.limit = limit
        self.lease_ms = int(lease * 1000)
        self.freed = asyncio.Event()  # set when any replica frees a slot (pub/sub `slot`)
        self._seq = itertools.count(1)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self, stop: asyncio.Event, poll: float = 0.5) -> str | None:
        """A slot's token, waiting until one frees; None when `stop` is set first."""
        token = f"{self.owner}:{next(self._seq)}"
        while not stop.is_set():
            self.freed.clear()
            taken = await self._acquire(keys=[self.keys.slots], args=[token, self.limit, self.lease_ms])
            if int(taken) == 1:
                return token
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):  # not wait_for: it can drop a cancellation on 3.11
                    await self.freed.wait()
        return None

    async def renew(self, token: str) -> bool:
        return int(await self._renew(keys=[self.keys.slots], args=[token, self.lease_ms])) == 1

    async def release(self, token: str) -> None:
        if await self.redis.zrem(self.keys.slots, token):
            await self.redis.publish(self.keys.events, "slot")

    async def in_flight(self) -> int:
        now = int((await self.redis.time())[0]) * 1000
        return int(await self.redis.zcount(self.keys.slots, now, "+inf"))
