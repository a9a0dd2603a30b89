-- tower-freqlimit: one decision over several limits at once (a compound), in
-- integer microseconds: gcra::compound::reserve_all in the crate, holes
-- included, which the tests hold equal.
--
-- (After prelude.lua, which reads the time and the keys.)
-- KEYS[1..n]  the limits' keys, values as in reserve.lua ("tat start1 end1 ...");
--             on a cluster all in one hash slot (the backend checks)
-- ARGV[1]  now, or '' for the server's TIME
-- ARGV[2]  extra milliseconds to keep a key after its TAT (see reserve.lua)
-- ARGV[3]  max_wait, or '' to wait forever
-- then, for limit i, ARGV[3i+1 .. 3i+3]: tau = (burst - 1) * T, cost * T and
--          (cost - 1) * T, T its interval (the same cost in every limit; cost
--          * T is 0 for a status check)
--
-- For a cost of 1 or more, each limit admits the call at instants in its
-- holes (spans given back by refunds, or gaps earlier compounds left) and
-- from its tail (the TAT) on. With lead = max(0, (cost - 1) * T - tau) and
-- conforms(s) = max(now, s + (cost - 1) * T - tau), a hole [hs, he) with room
-- (first = max(hs, now) <= final = he - cost * T) admits the instants
-- [conforms(first), final + lead]; the tail those from conforms(max(tat, now)).
-- The call runs at t, the earliest instant every limit admits: from the
-- latest of the limits' own earliest instants (that limit decides, the first
-- of equals), raised until no limit raises it. Each limit is charged at t: in
-- the first hole whose instants hold t, the span [max(first, t - lead),
-- + cost * T) (the hole split: the part before the span kept unless it has
-- passed, the part after it kept); else at the tail, from start = max(max(tat,
-- now), t - lead), the TAT becoming start + cost * T and the gap before start
-- (if any) a hole for other callers. At most MAX_HOLES holes, the shortest
-- forgotten (prelude.lua's forget_shortest, as in refund.lua); holes that
-- have ended are forgotten first (reserve.lua's rule).
-- A status check (cost 0) is decided at the TATs alone and stores nothing.
--
-- Returns, with limits numbered from 0:
--   {0, delay, decided_by, reset_after_1, start_1, end_1, ..., reset_after_n,
--    start_n, end_n} when admitted ([start, end) the span a refund gives back:
--    the span taken in a hole; at the tail from the old TAT, or from the end
--    of the gap it left; end is -1 and nothing is stored for cost 0;
--    reset_after the new TAT minus now, or the TAT's when the TAT stays);
--   {1, limit, retry_after, reset_after} when the common wait exceeds max_wait
--    (nothing stored in any key; limit the one that decided);
--   {2, limit} when limit can never admit the cost within max_wait (checked
--    first, in order, before any key is read);
--   the corrupt-value error (prelude.lua) naming the limit when one of the
--    keys holds a value of another form (nothing stored in any key).

local n = #KEYS
local now = now_from(ARGV[1])
local slack = tonumber(ARGV[2])
local max_wait = nil
if ARGV[3] ~= '' then max_wait = tonumber(ARGV[3]) end
local tau, need, last, lead = {}, {}, {}, {}
for i = 1, n do
  tau[i], need[i], last[i] = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 3])
  lead[i] = sub(last[i], tau[i])
end
local status = need[1] == 0

-- A cost above the burst that cannot fit within max_wait in some limit.
if max_wait then
  for i = 1, n do
    if lead[i] > max_wait then return {2, i - 1} end
  end
end

-- Every key read before anything is written: a corrupt one stores nothing.
local keys = {}
for i = 1, n do
  local key = load_key(KEYS[i])
  if key.err then
    key.err = key.err .. string.format(' (limit %d of the compound)', i - 1)
    return key
  end
  keys[i] = key
end

-- Each limit's tail, max(tat, now), and the holes that can still serve
-- (none for a status check, decided at the TAT).
local base, holes = {}, {}
for i = 1, n do
  local b = keys[i].tat
  if b < now then b = now end
  base[i] = b
  if status then holes[i] = {} else holes[i] = live_holes(keys[i].holes, now) end
end

-- The earliest instant a call whose cells start at slot conforms, in limit i.
local function conforms(i, slot)
  local at = sub(add(slot, last[i]), tau[i])
  if at < now then at = now end
  return at
end

-- The first and last slots the cost may start at in limit i's hole at j, or
-- nil when it does not fit.
local function room(i, j)
  local h = holes[i]
  if h[j + 1] < need[i] then return nil end
  local first, final = h[j], h[j + 1] - need[i]
  if first < now then first = now end
  if first > final then return nil end
  return first, final
end

-- The earliest instant from `from` on that limit i admits the call: in the
-- first hole whose instants reach it, else at the tail.
local function earliest(i, from)
  for j = 1, #holes[i], 2 do
    local first, final = room(i, j)
    if first then
      local at = conforms(i, first)
      if at < from then at = from end
      if at <= add(final, lead[i]) then return at end
    end
  end
  local at = conforms(i, base[i])
  if at < from then at = from end
  return at
end

-- The limit that decides: the latest own earliest instant (first of equals).
local t, decided = now, 1
for i = 1, n do
  local at = earliest(i, now)
  if at > t then t, decided = at, i end
end
-- The earliest instant every limit admits.
local raised = true
while raised do
  raised = false
  for i = 1, n do
    local at = earliest(i, t)
    if at > t then t, raised = at, true end
  end
end
local delay = t - now
if max_wait and delay > max_wait then
  return {1, decided - 1, delay - max_wait, base[decided] - now}
end

local reply = {0, delay, decided - 1}
if status then
  -- A status check: every limit as it is, nothing stored.
  for i = 1, n do
    reply[#reply + 1] = base[i] - now
    reply[#reply + 1] = keys[i].tat
    reply[#reply + 1] = -1
  end
  return reply
end

for i = 1, n do
  local h, tat = holes[i], keys[i].tat
  local reset_after, start, stop
  -- In the first hole whose instants hold t.
  for j = 1, #h, 2 do
    local first, final = room(i, j)
    if first and conforms(i, first) <= t and t <= add(final, lead[i]) then
      start = sub(t, lead[i])
      if start < first then start = first end
      stop = add(start, need[i])
      local hs, he = h[j], h[j + 1]
      table.remove(h, j + 1)
      table.remove(h, j)
      local at = j
      -- What precedes the span stays a hole unless it has passed.
      local from = hs
      if from < now then from = now end
      if start > from then
        table.insert(h, at, hs)
        table.insert(h, at + 1, start)
        at = at + 2
      end
      if he > stop then
        table.insert(h, at, stop)
        table.insert(h, at + 1, he)
      end
      forget_shortest(h)
      reset_after = sub(tat, now)
      break
    end
  end
  if not start then
    -- At the tail: the gap before the cells, if any, is a hole.
    local cells = sub(t, lead[i])
    if cells < base[i] then cells = base[i] end
    local new_tat = add(cells, need[i])
    if cells > base[i] then
      local m = #h
      -- Every hole lies below the old TAT: the gap joins the last if they touch.
      if m > 0 and h[m] >= base[i] then
        if cells > h[m] then h[m] = cells end
      else
        h[m + 1] = base[i]
        h[m + 2] = cells
      end
      forget_shortest(h)
      start = cells
    else
      start = tat
    end
    stop, tat = new_tat, new_tat
    reset_after = new_tat - now
  end
  local fields = {string.format('%.0f', tat)}
  for j = 1, #h do fields[j + 1] = string.format('%.0f', h[j]) end
  -- The TTL of reserve.lua: the key expires when its TAT has passed.
  local ttl = math.floor((tat - now) / 1000) + 1 + slack
  redis.call('SET', KEYS[i], table.concat(fields, ' '), 'PX', ttl)
  reply[#reply + 1] = reset_after
  reply[#reply + 1] = start
  reply[#reply + 1] = stop
end
return reply
