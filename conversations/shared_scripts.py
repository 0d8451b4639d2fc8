"""The Lua scripts of the shared account pool (conversations/shared_accounts.py).

Each runs atomically in Redis, on Redis's clock (`TIME`) for lease expiry, so instances whose clocks
differ still agree. They address keys by name beyond KEYS (one server, not Redis Cluster).
"""

# KEYS: the waiting queue, the waiters' last-seen times, the queue's counter, n lease sets, then n
# health records. ARGV: limit, lease ttl (ms), lease id, now (s), waiter id, stale (ms).
# Requests that must wait queue in Redis, in arrival order across all instances: a slot goes to a
# request only when fewer requests wait ahead of it than slots are free (first come, first served).
# A waiter not seen for `stale` ms (its instance died) leaves the queue.
# Returns {chosen index (0 = none), 1 if some account is usable, the place in the queue (0 = none),
# health record of each}.
CLAIM = """
local queue, alive, counter = KEYS[1], KEYS[2], KEYS[3]
local n = (#KEYS - 3) / 2
local limit, ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local waiter = ARGV[5]
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', ms - tonumber(ARGV[6]))) do
  redis.call('ZREM', queue, gone)
  redis.call('ZREM', alive, gone)
end
local best, fewest, usable, free = 0, limit, 0, 0
local records = {}
for i = 1, n do
  local record = redis.call('GET', KEYS[3 + n + i])
  records[i] = record or ''
  local ok = true
  if record then
    local health = cjson.decode(record)
    ok = health['state'] == 'healthy' or now >= tonumber(health['until'])
  end
  if ok then
    usable = 1
    redis.call('ZREMRANGEBYSCORE', KEYS[3 + i], '-inf', ms)
    local busy = redis.call('ZCARD', KEYS[3 + i])
    if busy < limit then free = free + limit - busy end
    if busy < fewest then best, fewest = i, busy end
  end
end
local mine = redis.call('ZSCORE', queue, waiter)
local ahead = redis.call('ZCARD', queue)
if mine then ahead = redis.call('ZCOUNT', queue, '-inf', '(' .. mine) end
local place = 0
if best > 0 and ahead < free then
  redis.call('ZADD', KEYS[3 + best], ms + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[3 + best], ttl * 2)
  if mine then
    redis.call('ZREM', queue, waiter)
    redis.call('ZREM', alive, waiter)
  end
else
  best = 0
  if usable == 1 then
    if not mine then
      mine = redis.call('INCR', counter)
      redis.call('ZADD', queue, mine, waiter)
    end
    place = tonumber(mine)
    redis.call('ZADD', alive, ms, waiter)
    for _, key in ipairs({queue, alive, counter}) do redis.call('PEXPIRE', key, ttl * 2) end
  end
end
return {best, usable, place, unpack(records)}
"""

# KEYS: the waiting queue, the waiters' last-seen times. ARGV: the waiter id.
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""

# KEYS: the lease set, the health record. ARGV: the lease id (or ''), the freed-slot channel, the
# new health record (or ''), its ttl (ms). Every freed slot is announced: a request may wait for it.
SETTLE = """
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], '1')
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

# KEYS: lease sets; ARGV: ttl (ms), then one lease id per key.
RENEW = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ms + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
end
return #KEYS
"""
