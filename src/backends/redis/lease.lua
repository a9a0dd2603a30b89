-- tower-freqlimit: a lease, n unit slots of one key taken in one call for
-- one process to hand out locally (see hot/lease.rs in the crate).
--
-- KEYS[1]  the key (see reserve.lua: "tat start1 end1 ...")
-- ARGV[1]  T                                    ARGV[2]  tau = (burst - 1) * T
-- ARGV[3]  n, the slots wanted                  ARGV[4]  horizon: the latest the
--          first slot may fall due, in µs after now
-- ARGV[5]  now, or '' for the server's TIME     ARGV[6]  extra milliseconds to
--          keep the key after its TAT (as in reserve.lua)
--
-- The slots follow the TAT (holes are left to single calls): slot i, from 0,
-- spans [base + i*T, base + (i+1)*T) of the TAT axis, base = max(TAT, now),
-- and falls due at max(now, base + i*T - tau), when a unit call taking that
-- span would have been admitted. Returns {n, base, now} when taken, {0, base,
-- now} when the first slot would fall due more than the horizon after now
-- (nothing stored), the corrupt-value error (prelude.lua) for a value of
-- another form.
local now = now_from(ARGV[5])
local interval, tau = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, horizon = tonumber(ARGV[3]), tonumber(ARGV[4])

local key = load_key(KEYS[1])
if key.err then return key end
local base = key.tat
if base < now then base = now end
if sub(base, tau) > add(now, horizon) then return {0, base, now} end
key.tat = add(base, n * interval)
key.holes = live_holes(key.holes, now)
store(KEYS[1], key, now, tonumber(ARGV[6]))
return {n, base, now}
