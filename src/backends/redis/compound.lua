-- tower-freqlimit: one decision over several limits at once (a compound), in
-- integer microseconds: gcra::compound::reserve_all in the crate, which the
-- tests hold equal.
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
-- The call runs at t = now + delay, delay the longest of the limits' waits
-- for the same call alone (at their TATs); every limit is charged at t: its
-- cells start at max(tat, t - lead), lead = max(0, (cost - 1) * T - tau).
-- Compounds append at the TAT and leave the key's holes as they are (they stay
-- in the value for single calls and refunds).
--
-- Returns, with limits numbered from 0:
--   {0, delay, decided_by, reset_after_1, start_1, end_1, ..., reset_after_n,
--    start_n, end_n} when admitted ([start, end) the span a refund gives back,
--    as reserve.lua's; end is -1 and nothing is stored for cost 0);
--   {1, limit, retry_after, reset_after} when the common wait exceeds max_wait
--    (nothing stored in any key; the limit with the longest wait);
--   {2, limit} when limit can never admit the cost within max_wait (checked
--    first, in order, before any key is read);
--   the corrupt-value error (prelude.lua) naming the limit when one of the
--    keys holds a value of another form (nothing stored in any key).
local function add(a, b)
  local s = a + b
  if s > MAXV then return MAXV end
  return s
end
local function sub(a, b)
  if a > b then return a - b end
  return 0
end

local n = #KEYS
local now = now_from(ARGV[1])
local slack = tonumber(ARGV[2])
local max_wait = nil
if ARGV[3] ~= '' then max_wait = tonumber(ARGV[3]) end
local tau, incr, last = {}, {}, {}
for i = 1, n do
  tau[i], incr[i], last[i] = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 3])
end

-- A cost above the burst that cannot fit within max_wait in some limit.
if max_wait then
  for i = 1, n do
    if sub(last[i], tau[i]) > max_wait then return {2, i - 1} end
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

-- Each limit's wait for the call alone (a unit call for cost 0); the longest.
local base, delay, decided = {}, 0, 1
for i = 1, n do
  local b = keys[i].tat
  if b < now then b = now end
  base[i] = b
  local wait = sub(sub(add(b, last[i]), tau[i]), now)
  if wait > delay then delay, decided = wait, i end
end
if max_wait and delay > max_wait then
  return {1, decided - 1, delay - max_wait, base[decided] - now}
end

local reply = {0, delay, decided - 1}
if incr[1] == 0 then
  -- A status check: every limit as it is, nothing stored.
  for i = 1, n do
    reply[#reply + 1] = base[i] - now
    reply[#reply + 1] = keys[i].tat
    reply[#reply + 1] = -1
  end
  return reply
end
local t = add(now, delay)
for i = 1, n do
  local first = sub(t, sub(last[i], tau[i]))
  if first < base[i] then first = base[i] end
  local new_tat = add(first, incr[i])
  local fields = {string.format('%.0f', new_tat)}
  local holes = keys[i].holes
  for j = 1, #holes do fields[j + 1] = string.format('%.0f', holes[j]) end
  -- The TTL of reserve.lua: the key expires when its TAT has passed.
  local ttl = math.floor((new_tat - now) / 1000) + 1 + slack
  redis.call('SET', KEYS[i], table.concat(fields, ' '), 'PX', ttl)
  -- The span from the TAT found, as for one limit: what lies between it and
  -- the first cell was free before this call.
  reply[#reply + 1] = new_tat - now
  reply[#reply + 1] = keys[i].tat
  reply[#reply + 1] = new_tat
end
return reply
