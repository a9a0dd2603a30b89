-- tower-freqlimit: give back the span of an unused reservation, whatever came
-- after it (the rules of gcra::holes in the crate, which the tests hold equal).
--
-- KEYS[1]  the key (see reserve.lua: "tat start1 end1 ...")
-- ARGV[1]  the start of the reservation's span     ARGV[2]  its end
--
-- The key's last span lowers its TAT to the span's start, absorbing the holes
-- that end there; an earlier span becomes a hole (merged with adjacent ones; at
-- most MAX_HOLES, the shortest forgotten beyond: prelude.lua). Returns 1 if
-- the span was given back, 0 if it was not held (given back already, or the
-- key expired), the corrupt-value error (prelude.lua) if the key holds a
-- value of another form.
local key = load_key(KEYS[1])
if key.err then return key end -- a corrupt value: nothing is stored
if not key.exists then return 0 end -- expired
local tat, holes = key.tat, key.holes

local s, e = tonumber(ARGV[1]), tonumber(ARGV[2])
if s >= e or e > tat then return 0 end
if e == tat then
  tat = s
  while #holes > 0 and holes[#holes] >= tat do
    if holes[#holes - 1] < tat then tat = holes[#holes - 1] end
    holes[#holes] = nil
    holes[#holes] = nil
  end
else
  -- The first hole that ends after the span starts.
  local i = 1
  while i < #holes and holes[i + 1] <= s do i = i + 2 end
  if i < #holes and holes[i] < e then return 0 end -- overlaps a hole: given back already
  local joins_before = i > 1 and holes[i - 1] == s
  local joins_after = i < #holes and holes[i] == e
  if joins_before and joins_after then
    holes[i - 1] = holes[i + 1]
    table.remove(holes, i + 1)
    table.remove(holes, i)
  elseif joins_before then
    holes[i - 1] = e
  elseif joins_after then
    holes[i] = s
  else
    table.insert(holes, i, e)
    table.insert(holes, i, s)
    forget_shortest(holes)
  end
end
local fields = {string.format('%.0f', tat)}
for i = 1, #holes do fields[i + 1] = string.format('%.0f', holes[i]) end
-- The key keeps its expiry: that of a TAT at least as late as the new one.
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[1], table.concat(fields, ' '), 'PX', pttl)
elseif pttl == -1 then
  redis.call('SET', KEYS[1], table.concat(fields, ' '))
else
  return 0
end
return 1
