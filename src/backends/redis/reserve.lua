-- tower-freqlimit: one GCRA reservation on one key, in integer microseconds.
--
-- KEYS[1]  the key's TAT (a decimal integer, microseconds), absent for a new key
-- ARGV[1]  T, the emission interval            ARGV[2]  tau = (burst - 1) * T
-- ARGV[3]  cost * T                             ARGV[4]  (cost - 1) * T
-- ARGV[5]  max_wait, or '' to wait forever      ARGV[6]  now, or '' for the server's TIME
-- ARGV[7]  extra milliseconds to keep the key after its TAT (0 unless the caller's
--          clock is not the server's real time)
--
-- Returns {0, delay, reset_after, tat_before, tat_after or -1} when admitted,
-- {1, retry_after, reset_after} when rejected (nothing stored), {2} when the cost
-- can never fit within max_wait. Every number is an integer below 2^53, so Lua's
-- doubles hold it exactly; sums saturate at 2^53 (about 285 years).
local MAXV = 9007199254740992
local function add(a, b)
  local s = a + b
  if s > MAXV then return MAXV end
  return s
end
local function sub(a, b)
  if a > b then return a - b end
  return 0
end

local now
if ARGV[6] == '' then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[6])
end
local tau, incr, last = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local tat = 0 -- a new key: any TAT in the past means a full bucket
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = tonumber(stored)
  if not tat then return redis.error_reply('ERR tower-freqlimit: the key does not hold a TAT') end
end
-- A TAT ahead of now (also after the server's clock went back) only delays.
local base = tat
if base < now then base = now end

-- Cost 0 is a status check: decided as a unit call (`last` is 0), storing nothing.
local delay = sub(sub(add(base, last), tau), now)
if ARGV[5] ~= '' then
  local max_wait = tonumber(ARGV[5])
  if delay > max_wait then
    if sub(last, tau) > max_wait then return {2} end
    return {1, delay - max_wait, base - now}
  end
end
if incr == 0 then
  return {0, delay, base - now, tat, -1}
end
local new_tat = add(base, incr)
-- Expire exactly when the TAT has passed (rounded up to the next millisecond):
-- the key is then as good as new, so Redis forgets nothing that matters.
local ttl = math.floor((new_tat - now) / 1000) + 1 + tonumber(ARGV[7])
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return {0, delay, new_tat - now, tat, new_tat}
