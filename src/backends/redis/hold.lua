-- tower-freqlimit: hold a key back (the server being paced said "retry after"):
-- no call is admitted within the hold, in integer microseconds.
--
-- KEYS[1]  the key (see reserve.lua: "tat start1 end1 ...")
-- ARGV[1]  hold + tau: how far past now the TAT must be
-- ARGV[2]  now, or '' for the server's TIME
-- ARGV[3]  extra milliseconds to keep the key after its TAT (as in reserve.lua)
--
-- The TAT becomes the later of itself and now + ARGV[1]; the parts of holes
-- below that are forgotten (a slot there would admit a call within the hold).
-- Returns 1 if the TAT moved, 0 if the key already owed as long, the
-- corrupt-value error (prelude.lua) if the key holds a value of another form.
local now = now_from(ARGV[2])
local target = now + tonumber(ARGV[1])
if target > MAXV then target = MAXV end

local key = load_key(KEYS[1])
if key.err then return key end -- a corrupt value: nothing is stored
local tat, holes = key.tat, key.holes

local kept, cut = {}, false
for i = 1, #holes, 2 do
  if holes[i + 1] > target then
    local s = holes[i]
    if s < target then s, cut = target, true end
    kept[#kept + 1] = s
    kept[#kept + 1] = holes[i + 1]
  else
    cut = true
  end
end
local moved = 0
if tat < target then
  tat, moved = target, 1
end
if moved == 0 and not cut then return 0 end

local fields = {string.format('%.0f', tat)}
for i = 1, #kept do fields[i + 1] = string.format('%.0f', kept[i]) end
local ttl = math.floor((tat - now) / 1000) + 1 + tonumber(ARGV[3])
redis.call('SET', KEYS[1], table.concat(fields, ' '), 'PX', ttl)
return moved
