-- tower-freqlimit: what the scripts share, put before each of them (see
-- script.rs), so that there is one definition of the time and of a key's value.
local MAXV = 9007199254740992

-- The time in microseconds: `arg`, or the server's TIME when `arg` is ''.
local function now_from(arg)
  if arg == '' then
    if redis.replicate_commands then redis.replicate_commands() end
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return tonumber(arg)
end

-- A key's value, "tat start1 end1 start2 end2 ...": its TAT (0 for a new key,
-- any TAT in the past meaning a full bucket), its holes, and whether the key
-- exists; nil when the value is not of that form.
local function load_key(key)
  local stored = redis.call('GET', key)
  if not stored then return 0, {}, false end
  local tat, holes, n = 0, {}, 0
  for field in string.gmatch(stored, '%S+') do
    local v = tonumber(field)
    if not v then return nil end
    if n == 0 then tat = v else holes[n] = v end
    n = n + 1
  end
  if n < 1 or n % 2 == 0 then return nil end
  return tat, holes, true
end

