-- shlimit.lua - one shared limiter decision (see include/shlimit.h).
-- KEYS[1] PREFIX{ROUTE}:limit  hash: epoch, tat, hold, dropped
-- KEYS[2] PREFIX{ROUTE}:log    list: the newest dispatch instants (us), oldest first
-- KEYS[3] PREFIX{ROUTE}:turns  sorted set: instance id -> when its turn comes (us)
-- ARGV: known epoch (0 = none), k (0: record a dispatch now, see below), units, interval, tolerance, catchup,
--       grace, state ttl (ms), instance id, n_logs, then n, window, guard per log.
-- Returns {granted, wait_us, epoch, now}: `granted` (0..k) go now, recorded
-- now; wait_us > 0: ask again then (the asker's next turn), 0: no turn held.
-- Redis 7 replicates a script's effects, so TIME may come before writes.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local known = ARGV[1]
local k = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local tol = tonumber(ARGV[5])
local catchup = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local state_ttl = tonumber(ARGV[8])
local id = ARGV[9]
local nlogs = tonumber(ARGV[10])
local ns, spans = {}, {}
local maxn, maxspan = 0, 0
for i = 1, nlogs do
  local b = 10 + (i - 1) * 3
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
  -- No state: first use, or Redis lost it (the epoch is when it was made).
  epoch = now
  dropped = nil
  dirty = true
end
if known ~= '0' and tonumber(known) ~= epoch then
  -- The asker saw another epoch: the state was lost and made again at
  -- `epoch`. Whatever was sent before that is unknown: nothing more goes
  -- until it has left every window.
  if epoch + maxspan > hold then
    hold = epoch + maxspan
    dirty = true
  end
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
local head_id = nil
if k == 0 then
  -- A dispatch left well after Redis granted it (a new connection had to be
  -- opened first): record it again now, so that later decisions count it
  -- no earlier than it went. One more instant than was sent only costs rate.
  take(now)
else
  -- Turns: instances with a backlog queue up, each told when its turn comes;
  -- a slot goes to whoever's turn is due first, so equal backlogs share. A
  -- turn not taken within `grace` (its instance left) is forgotten.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('(%d', now - grace))
  local mine = tonumber(redis.call('ZSCORE', KEYS[3], id))
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  head_id = head[1]
  local head_at = tonumber(head[2])
  local step = units * interval
  local nobody_due = head_id == nil or head_id == id or head_at > now

  -- A turn after everyone queued, not before `at`.
  local function queue_up(at)
    local tl = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
    if tl[1] and tl[1] ~= id and tonumber(tl[2]) + step > at then
      at = tonumber(tl[2]) + step
    end
    redis.call('ZADD', KEYS[3], at, id)
    return at
  end

  -- The turns follow the limits: when the next free instant moved later (a
  -- late asker restarted the schedule), every queued turn moves with it, in
  -- order, so that nobody comes back early, or overdue and forgotten.
  local function rebase(from)
    local q = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
    local at = from
    for j = 1, #q, 2 do
      local sc = tonumber(q[j + 1])
      if sc < at then
        redis.call('ZADD', KEYS[3], at, q[j])
        sc = at
      end
      at = sc + step
    end
  end

  local e = earliest(now)
  if e <= now and nobody_due then
    while granted < k and earliest(now) <= now do
      take(now)
      granted = granted + 1
    end
    if mine then redis.call('ZREM', KEYS[3], id) end
    -- (Nobody queued, the common case alone: nothing to move.)
    if head_id and head_id ~= id then rebase(earliest(now)) end
    if granted < k then wait = queue_up(earliest(now)) - now end
  elseif nobody_due then
    -- Our turn (or nobody's), held back by the limits: keep it until then.
    if mine then
      rebase(e)
      wait = tonumber(redis.call('ZSCORE', KEYS[3], id)) - now
    else
      wait = queue_up(e) - now
    end
  elseif mine then
    -- Another's turn is due before ours: look again after it.
    wait = math.max(e - now, step)
  else
    wait = queue_up(e) - now
  end
  if wait < 1 and granted == 0 then wait = 1 end
  if wait > 0 or head_id then
    local tail = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
    if tail[2] then
      redis.call('PEXPIRE', KEYS[3], math.floor((tonumber(tail[2]) - now + grace) / 1000) + 1000)
    end
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
