-- tower-freqlimit: one GCRA reservation on one key, in integer microseconds.
--
-- (After prelude.lua, which reads the time and the key.)
-- KEYS[1]  the key: its TAT, then the holes given back before it (spans of
--          cancelled reservations that were not the last, see gcra::holes in
--          the crate), as decimal integers separated by spaces:
--          "tat start1 end1 start2 end2 ...", holes sorted; absent for a new key
-- ARGV[1]  T, the emission interval            ARGV[2]  tau = (burst - 1) * T
-- ARGV[3]  cost * T                             ARGV[4]  (cost - 1) * T
-- ARGV[5]  max_wait, or '' to wait forever      ARGV[6]  now, or '' for the server's TIME
-- ARGV[7]  extra milliseconds to keep the key after its TAT (0 unless the caller's
--          clock is not the server's real time)
--
-- Returns {0, delay, reset_after, start, end or -1} when admitted ([start, end)
-- is the span the reservation took, for a refund), {1, retry_after, reset_after}
-- when rejected (nothing stored), {2} when the cost can never fit within
-- max_wait, the corrupt-value error (prelude.lua) when the key holds a value of
-- another form (nothing stored). Every number is an integer below 2^53, so Lua's doubles hold it
-- exactly; sums saturate at 2^53 (about 285 years).

local now = now_from(ARGV[6])
local tau, incr, last = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local key = load_key(KEYS[1])
if key.err then return key end -- a corrupt value: nothing is stored
local tat, holes = key.tat, key.holes -- holes: start1, end1, start2, end2, ...
-- A TAT ahead of now (also after the server's clock went back) only delays.
local base = tat
if base < now then base = now end

if incr == 0 then
  -- Cost 0 is a status check: decided as a unit call at the TAT (holes are
  -- not counted, as in gcra::holes), storing nothing.
  local delay = sub(sub(base, tau), now)
  if ARGV[5] ~= '' and delay > tonumber(ARGV[5]) then
    return {1, delay - tonumber(ARGV[5]), base - now}
  end
  return {0, delay, base - now, tat, -1}
end

-- Holes that have ended serve no one.
local kept = {}
for i = 1, #holes, 2 do
  if holes[i + 1] > now then
    kept[#kept + 1] = holes[i]
    kept[#kept + 1] = holes[i + 1]
  end
end
holes = kept
-- The earliest hole the cost fits in, else the TAT.
local slot, hole = base, nil
for i = 1, #holes, 2 do
  local x = holes[i]
  if x < now then x = now end
  if add(x, incr) <= holes[i + 1] then
    slot, hole = x, i
    break
  end
end

local delay = sub(sub(add(slot, last), tau), now)
if ARGV[5] ~= '' then
  local max_wait = tonumber(ARGV[5])
  if delay > max_wait then
    if sub(last, tau) > max_wait then return {2} end
    return {1, delay - max_wait, base - now}
  end
end
local new_tat, start, stop
if hole then
  -- The TAT stays; the hole keeps what follows the span (what precedes it
  -- has passed).
  new_tat, start, stop = tat, slot, add(slot, incr)
  if stop < holes[hole + 1] then
    holes[hole] = stop
  else
    table.remove(holes, hole + 1)
    table.remove(holes, hole)
  end
else
  new_tat = add(base, incr)
  start, stop = tat, new_tat
end
local fields = {string.format('%.0f', new_tat)}
for i = 1, #holes do fields[i + 1] = string.format('%.0f', holes[i]) end
-- Expire exactly when the TAT has passed (rounded up to the next millisecond):
-- the key is then as good as new (its holes lie below the TAT), so Redis
-- forgets nothing that matters.
local ttl = math.floor((new_tat - now) / 1000) + 1 + tonumber(ARGV[7])
redis.call('SET', KEYS[1], table.concat(fields, ' '), 'PX', ttl)
return {0, delay, new_tat - now, start, stop}
