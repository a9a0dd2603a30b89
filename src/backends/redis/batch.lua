-- tower-freqlimit: the reservations queued in this process for one key while
-- a call for it was in flight, decided in one script call, in order, exactly
-- as the same calls of reserve.lua made back to back (see step in
-- prelude.lua): each caller with its own cost, max_wait and figures; an
-- admitted caller gets its own span, a refused one consumes nothing.
--
-- KEYS[1]  the key (see reserve.lua: "tat start1 end1 ...")
-- ARGV[1]  extra milliseconds to keep the key after its TAT (as in reserve.lua)
-- then five per caller, in order:
--          tau, cost * T, (cost - 1) * T, max_wait or '', now or '' (the
--          server's TIME, read once for the whole batch)
--
-- Returns one reserve.lua reply per caller, in order, or the corrupt-value
-- error (prelude.lua) when the key holds a value of another form (nothing
-- stored, no caller decided).
local key = load_key(KEYS[1])
if key.err then return key end
local server_now, stored_at = nil, nil
local replies = {}
for i = 2, #ARGV, 5 do
  local now
  if ARGV[i + 4] == '' then
    if not server_now then server_now = now_from('') end
    now = server_now
  else
    now = tonumber(ARGV[i + 4])
  end
  local max_wait = nil
  if ARGV[i + 3] ~= '' then max_wait = tonumber(ARGV[i + 3]) end
  local reply = step(key, now, tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), max_wait)
  -- The earliest time of a write gives the longest expiry: safe for all.
  if reply[1] == 0 and reply[5] ~= -1 and (not stored_at or now < stored_at) then
    stored_at = now
  end
  replies[#replies + 1] = reply
end
if stored_at then store(KEYS[1], key, stored_at, tonumber(ARGV[1])) end
return replies
