-- tower-freqlimit: a lease, n unit slots of one key taken in one call for
-- one process to hand out locally (see redis/lease/ in the crate).
--
-- KEYS[1]  the key (see reserve.lua: "tat start1 end1 ...")
-- ARGV[1]  T                                    ARGV[2]  tau = (burst - 1) * T
-- ARGV[3]  n, the slots wanted                  ARGV[4]  horizon: the latest the
--          first slot may fall due, in µs after now
-- ARGV[5]  now, or '' for the server's TIME     ARGV[6]  extra milliseconds to
--          keep the key after its TAT (as in reserve.lua)
-- ARGV[7]  where the caller's leases end on the TAT axis (0: it holds none)
--
-- The slots fill the earliest live hole that starts at or after ARGV[7] and
-- holds a whole slot from now on (slots given back, by a lease whose process
-- stopped needing it or a refund: leasing processes would otherwise never
-- take them), as many as it holds up to n; else they follow the TAT. (A hole
-- before the caller's own leases is left to others: a process uses its
-- leases in turn, and would lose the slots of one while using the other.)
-- Slot i, from 0, spans [base + i*T, base + (i+1)*T) of the TAT axis, base =
-- max(hole start or TAT, now), and falls due at max(now, base + i*T - tau),
-- when a unit call taking that span would have been admitted. Returns {k, base, now} when k
-- slots are taken, {0, base, now} when the first slot would fall due more
-- than the horizon after now (nothing stored), the corrupt-value error
-- (prelude.lua) for a value of another form.
local now = now_from(ARGV[5])
local interval, tau = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, horizon = tonumber(ARGV[3]), tonumber(ARGV[4])

local key = load_key(KEYS[1])
if key.err then return key end
local after = tonumber(ARGV[7])
local holes = live_holes(key.holes, now)
for i = 1, #holes, 2 do
  local x = holes[i]
  if x < now then x = now end
  local fit = math.floor((holes[i + 1] - x) / interval)
  if fit >= 1 and holes[i] >= after then
    -- Holes lie in order below the TAT: past the horizon, so is the rest.
    if sub(x, tau) > add(now, horizon) then return {0, x, now} end
    local k = math.min(n, fit)
    take_hole_until(holes, i, x + k * interval)
    key.holes = holes
    store(KEYS[1], key, now, tonumber(ARGV[6]))
    return {k, x, now}
  end
end
local base = key.tat
if base < now then base = now end
if sub(base, tau) > add(now, horizon) then return {0, base, now} end
key.tat = add(base, n * interval)
key.holes = holes
store(KEYS[1], key, now, tonumber(ARGV[6]))
return {n, base, now}
