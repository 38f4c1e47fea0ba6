"""The Lua scripts that make every job transition atomic in Redis (run with EVALSHA by `store`).

A job is a hash `{p}:job:ID`; its place in line is an entry `{job: ID, tenant: T}` of the stream `{p}:stream`,
read through the consumer group `workers`. Each script checks the state it expects and changes the hash, the
stream, the per-tenant and global counts and the retry schedule together, or not at all. A worker owns a
running job while the hash names it (`worker`): a worker whose job was reclaimed by another can neither
finish it nor retry it. Times come from Redis's clock (TIME), so replicas never disagree on them.
"""

from __future__ import annotations

CLOCK = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function now_text()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function count(keys_tenant, keys_stats, field, by)
  redis.call('HINCRBY', keys_tenant, field, by)
  redis.call('HINCRBY', keys_stats, field, by)
end
"""

# KEYS job, stream, tenant, stats; ARGV id, tenant, max_unfinished, field, value, ...
SUBMIT = (
    CLOCK
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('job id taken') end
local c = redis.call('HMGET', KEYS[3], 'queued', 'running')
local unfinished = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0)
if unfinished >= tonumber(ARGV[3]) then return {0, unfinished} end
local now = now_text()
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'tenant', ARGV[2], 'status', 'queued', 'created', now,
  'updated', now, 'attempts', 0, 'failures', 0, unpack(ARGV, 4))
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'tenant', ARGV[2])
redis.call('HSET', KEYS[1], 'entry', entry)
count(KEYS[3], KEYS[4], 'queued', 1)
return {1, entry}
"""
)

# A job answered at once (a cache hit): born succeeded. KEYS job; ARGV ttl_ms, field, value, ...
DONE_AT_ONCE = (
    CLOCK
    + """
local now = now_text()
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'created', now, 'updated', now, 'started', now,
  'finished', now, 'attempts', 0, 'failures', 0, unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
)

# A worker got an entry (new or reclaimed). KEYS job, tenant, stats, stream, lease;
# ARGV group, entry, consumer, channel, ttl_ms, left_error, id
START = (
    CLOCK
    + """
local function drop()
  redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[4], ARGV[2])
end
local p = redis.call('XPENDING', KEYS[4], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return {'skip'} end  -- not (or no longer) this worker's entry
local h = redis.call('HMGET', KEYS[1], 'status', 'entry', 'sync')
local st = h[1]
if (not st) or h[2] ~= ARGV[2] or (st ~= 'queued' and st ~= 'running') then
  drop()
  return {'skip'}
end
local now = now_text()
if h[3] == '1' and redis.call('EXISTS', KEYS[5]) == 0 then
  -- a synchronous request whose client is gone: nobody would read the answer
  count(KEYS[2], KEYS[3], st, -1)
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', now, 'updated', now, 'error', ARGV[6])
  redis.call('HDEL', KEYS[1], 'body', 'headers')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  drop()
  redis.call('PUBLISH', ARGV[4], 'done ' .. ARGV[7])
  return {'skip'}
end
local reclaimed = 0
if st == 'queued' then
  count(KEYS[2], KEYS[3], 'queued', -1)
  count(KEYS[2], KEYS[3], 'running', 1)
  redis.call('HSET', KEYS[1], 'status', 'running')
  redis.call('HSETNX', KEYS[1], 'started', now)
else
  reclaimed = 1  -- its worker went silent mid-job: that attempt counts as failed
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'updated', now)
redis.call('HDEL', KEYS[1], 'progress', 'retry_at')
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PUBLISH', ARGV[4], 'state ' .. ARGV[7])
local f = redis.call('HMGET', KEYS[1], 'failures', 'route', 'body', 'headers', 'cacheable', 'tag', 'created')
return {'run', attempts, reclaimed, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
"""
)

# A worker holds an entry it has not started (the breaker is open): keep it from looking abandoned.
# KEYS stream; ARGV group, consumer, entry -> 1 still this worker's, 0 not any more
HOLD = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# The running worker is alive: keep its entry from being reclaimed. KEYS job, stream; ARGV group, consumer, entry
HEARTBEAT = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker')
if h[2] ~= ARGV[2] then return 'lost' end
if h[1] ~= 'running' then return h[1] or 'lost' end
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 'running'
"""

# KEYS job; ARGV consumer, progress json, channel, id
PROGRESS = """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker')
if h[1] ~= 'running' or h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'progress ' .. ARGV[4])
return 1
"""

# KEYS job, tenant, stats, stream; ARGV group, entry, consumer, status, http_status, field, payload, ttl_ms,
# channel, id, pod
FINISH = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker')
if h[2] ~= ARGV[3] then return 0 end  -- reclaimed by another worker: the job is theirs now
redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[4], ARGV[2])
if h[1] ~= 'running' then return 0 end  -- cancelled meanwhile
local now = now_text()
count(KEYS[2], KEYS[3], 'running', -1)
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished', now, 'updated', now, 'http_status', ARGV[5],
  ARGV[6], ARGV[7], 'pod', ARGV[11])
redis.call('HDEL', KEYS[1], 'body', 'headers')
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PUBLISH', ARGV[9], 'done ' .. ARGV[10])
return 1
"""
)

# Back in line after a retryable failure, due after a delay. KEYS job, tenant, stats, stream, delayed;
# ARGV group, entry, consumer, delay_ms, counted (0/1), error json, http_status, channel, id
RETRY = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'worker')
if h[2] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[4], ARGV[2])
if h[1] ~= 'running' then return 0 end
count(KEYS[2], KEYS[3], 'running', -1)
count(KEYS[2], KEYS[3], 'queued', 1)
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'failures', 1) end
local due = now_ms() + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated', now_text(), 'entry', '', 'last_error', ARGV[6],
  'last_status', ARGV[7], 'retry_at', string.format('%.3f', due / 1000))
redis.call('HDEL', KEYS[1], 'worker', 'progress')
redis.call('ZADD', KEYS[5], due, ARGV[9])
redis.call('PUBLISH', ARGV[8], 'state ' .. ARGV[9])
return 1
"""
)

# A retry that is due goes back into the stream. KEYS delayed, stream, job; ARGV id
PROMOTE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local h = redis.call('HMGET', KEYS[3], 'status', 'tenant')
if h[1] ~= 'queued' then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'tenant', h[2])
redis.call('HSET', KEYS[3], 'entry', entry)
redis.call('HDEL', KEYS[3], 'retry_at')
return 1
"""

# KEYS job, tenant, stats, stream, delayed; ARGV tenant, group, ttl_ms, error json, channel, id
CANCEL = (
    CLOCK
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'entry')
local st = h[1]
if (not st) or h[2] ~= ARGV[1] then return {'missing'} end
if st ~= 'queued' and st ~= 'running' then return {'final', st} end
count(KEYS[2], KEYS[3], st, -1)
if st == 'queued' then
  if h[3] and h[3] ~= '' then
    redis.call('XACK', KEYS[4], ARGV[2], h[3])
    redis.call('XDEL', KEYS[4], h[3])
  end
  redis.call('ZREM', KEYS[5], ARGV[6])
end
local now = now_text()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', now, 'updated', now, 'error', ARGV[4])
redis.call('HDEL', KEYS[1], 'body', 'headers', 'retry_at')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], 'cancel ' .. ARGV[6])
return {'cancelled', st}
"""
)

# Forget a consumer that holds nothing (a replica that is gone). KEYS stream; ARGV group, consumer
FORGET_CONSUMER = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
"""
