-- tower-freqlimit: one GCRA reservation on one key, in integer microseconds.
--
-- (After prelude.lua, which reads the time and the key and holds the step.)
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
local max_wait = nil
if ARGV[5] ~= '' then max_wait = tonumber(ARGV[5]) end

local key = load_key(KEYS[1])
if key.err then return key end -- a corrupt value: nothing is stored
local reply = step(key, now, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), max_wait)
if reply[1] == 0 and reply[5] ~= -1 then store(KEYS[1], key, now, tonumber(ARGV[7])) end
return reply
