-- tower-freqlimit: give back an unused reservation, only if none came after it.
--
-- KEYS[1]  the key's TAT
-- ARGV[1]  the TAT the reservation stored    ARGV[2]  the TAT before it
-- ARGV[3]  the time of the reservation (on the scale of the TATs)
-- ARGV[4]  extra milliseconds to keep the key after its TAT
--
-- Compare-and-swap: returns 1 if the TAT was put back, 0 if it had changed.
local stored = redis.call('GET', KEYS[1])
if not stored or tonumber(stored) ~= tonumber(ARGV[1]) then return 0 end
local before, at = tonumber(ARGV[2]), tonumber(ARGV[3])
if before > at then
  -- Expires no earlier than the restored TAT (measured from the reservation).
  redis.call('SET', KEYS[1], ARGV[2], 'PX', math.floor((before - at) / 1000) + 1 + tonumber(ARGV[4]))
else
  redis.call('DEL', KEYS[1])
end
return 1
