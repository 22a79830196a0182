-- shlimit.lua - one shared limiter decision (see include/shlimit.h).
-- KEYS[1] PREFIX{ROUTE}:limit  hash: epoch, tat, hold, dropped
-- KEYS[2] PREFIX{ROUTE}:log    list: the newest dispatch instants (us), oldest first
-- ARGV: known epoch (0 = none), k, units, interval, tolerance, catchup,
--       horizon, state ttl (ms), n_logs, then n, window, guard per log.
-- Returns {granted, wait_us, epoch, now}: granted >= 1 and wait 0: go now;
-- granted 1 and wait > 0: reserved at now + wait; granted 0: ask again then.
-- Redis 7 replicates a script's effects, so TIME may come before writes.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local known = ARGV[1]
local k = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local tol = tonumber(ARGV[5])
local catchup = tonumber(ARGV[6])
local horizon = tonumber(ARGV[7])
local state_ttl = tonumber(ARGV[8])
local nlogs = tonumber(ARGV[9])
local ns, spans = {}, {}
local maxn, maxspan = 0, 0
for i = 1, nlogs do
  local b = 9 + (i - 1) * 3
  ns[i] = tonumber(ARGV[b + 1])
  spans[i] = tonumber(ARGV[b + 2]) + tonumber(ARGV[b + 3])
  if ns[i] > maxn then maxn = ns[i] end
  if spans[i] > maxspan then maxspan = spans[i] end
end

local st = redis.call('HMGET', KEYS[1], 'epoch', 'tat', 'hold', 'dropped')
local epoch = tonumber(st[1])
local tat = tonumber(st[2])
local hold = tonumber(st[3]) or 0
local dropped = tonumber(st[4])
local dirty = false
if not epoch then
  -- No state: first use, or Redis lost it. Whoever saw an epoch knows it
  -- was lost: hold the route until anything sent before has left every window.
  epoch = now
  if known ~= '0' then
    hold = now + maxspan
    dropped = nil
  end
  dirty = true
end

local len = redis.call('LLEN', KEYS[2])
local last = nil
if len > 0 then last = tonumber(redis.call('LINDEX', KEYS[2], -1)) end

-- The entry at 0-based position pos from the oldest, walked from the nearer end.
local function entry(pos)
  if pos < len / 2 then return tonumber(redis.call('LINDEX', KEYS[2], pos)) end
  return tonumber(redis.call('LINDEX', KEYS[2], pos - len))
end

-- Earliest instant >= at for one more dispatch of `units`.
local function earliest(at)
  local nxt = at
  if hold > nxt then nxt = hold end
  if tat and tat - tol > nxt then nxt = tat - tol end
  if last and last > nxt then nxt = last end
  for i = 1, nlogs do
    local pos = len + units - ns[i] - 1
    local e = nil
    if pos >= 0 then
      e = entry(pos)
    elseif dropped then
      -- Fewer entries than this limit needs were kept: the missing ones
      -- are no newer than the newest one trimmed off.
      e = dropped
    end
    if e and e + spans[i] > nxt then nxt = e + spans[i] end
  end
  return nxt
end

local function take(at)
  local base = at
  if tat and at <= tat + catchup then base = tat end
  tat = base + units * interval
  for _ = 1, units do redis.call('RPUSH', KEYS[2], at) end
  len = len + units
  last = at
  dirty = true
end

local granted, wait = 0, 0
while granted < k do
  if earliest(now) > now then break end
  take(now)
  granted = granted + 1
end
if granted == 0 then
  local at = earliest(now)
  wait = at - now
  if wait <= horizon then
    take(at)
    granted = 1
  end
end

if dirty then
  if len > maxn then
    dropped = entry(len - maxn - 1)
    redis.call('LTRIM', KEYS[2], -maxn, -1)
  end
  local fields = {'epoch', epoch, 'hold', hold}
  if tat then table.insert(fields, 'tat'); table.insert(fields, tat) end
  if dropped then table.insert(fields, 'dropped'); table.insert(fields, dropped) end
  redis.call('HSET', KEYS[1], unpack(fields))
  if len > 0 then
    redis.call('PEXPIRE', KEYS[2], math.floor((last - now + maxspan) / 1000) + 1000)
  end
end
redis.call('PEXPIRE', KEYS[1], state_ttl)
return {granted, wait, epoch, now}
