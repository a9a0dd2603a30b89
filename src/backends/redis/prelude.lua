-- tower-freqlimit: what the scripts share, put before each of them (see
-- script.rs), so that there is one definition of the time and of a key's value.
local MAXV = 9007199254740992

-- The most holes a key keeps (gcra::holes::MAX_HOLES in the crate).
local MAX_HOLES = 64

-- Beyond MAX_HOLES, the shortest hole of h ({start1, end1, ...}; the
-- earliest of equals) is forgotten.
local function forget_shortest(h)
  if #h > 2 * MAX_HOLES then
    local shortest = 1
    for j = 3, #h, 2 do
      if h[j + 1] - h[j] < h[shortest + 1] - h[shortest] then shortest = j end
    end
    table.remove(h, shortest + 1)
    table.remove(h, shortest)
  end
end

-- Saturating arithmetic on integers below 2^53 (sums stop at MAXV, about
-- 285 years; differences at 0).
local function add(a, b)
  local s = a + b
  if s > MAXV then return MAXV end
  return s
end
local function sub(a, b)
  if a > b then return a - b end
  return 0
end

-- The time in microseconds: `arg`, or the server's TIME when `arg` is ''.
local function now_from(arg)
  if arg == '' then
    if redis.replicate_commands then redis.replicate_commands() end
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return tonumber(arg)
end

-- A number as the scripts write it: decimal digits, at most 2^53; nil for
-- anything else, which tonumber would take ('inf', '1e300', '0x10', '-5', '1.5'
-- ...) and turn into a TAT centuries ahead or a value that cannot be stored.
-- Compared as text: beyond 2^53 doubles round, so 2^53 + 1 would pass as 2^53.
local function stored_int(field)
  local digits = string.match(field, '^0*(%d+)$')
  if not digits or #digits > 16 or (#digits == 16 and digits > '9007199254740992') then
    return nil
  end
  return tonumber(digits)
end

-- The error reply for a value of another form: the prefix is script.rs's
-- CORRUPT, which the backend reports as BackendErrorKind::Corrupt.
local function corrupt(why)
  return redis.error_reply('ERR tower-freqlimit: corrupt value: ' .. why)
end

-- A key's value, "tat start1 end1 start2 end2 ...": {tat, holes, exists}, the
-- TAT 0 for a new key (any TAT in the past meaning a full bucket); or, for a
-- value the scripts did not write, the error reply to return at once, so that
-- nothing is stored from it (see corrupt).
local function load_key(key)
  local stored = redis.call('GET', key)
  if not stored then return {tat = 0, holes = {}, exists = false} end
  local tat, holes, n = 0, {}, 0
  for field in string.gmatch(stored, '%S+') do
    local v = stored_int(field)
    if not v then
      return corrupt(string.format("field %d, '%s', is not a whole number of microseconds up to 2^53",
        n + 1, string.sub(field, 1, 24)))
    end
    if n == 0 then tat = v else holes[n] = v end
    n = n + 1
  end
  if n == 0 then return corrupt('no TAT') end
  if n % 2 == 0 then return corrupt('a hole without its end') end
  -- Holes start before they end, in order, apart (or touching), below the TAT.
  local floor = 0
  for i = 1, #holes, 2 do
    if holes[i] < floor or holes[i] >= holes[i + 1] then
      return corrupt('holes out of order')
    end
    floor = holes[i + 1]
  end
  if floor > tat then return corrupt('a hole past the TAT') end
  return {tat = tat, holes = holes, exists = true}
end


-- The holes of h ({start1, end1, ...}) that have not ended at now: a hole
-- that has ended serves no one.
local function live_holes(h, now)
  local kept = {}
  for i = 1, #h, 2 do
    if h[i + 1] > now then
      kept[#kept + 1] = h[i]
      kept[#kept + 1] = h[i + 1]
    end
  end
  return kept
end

-- Hole i of holes ({start1, end1, ...}) keeps what follows stop: the span
-- up to stop is taken (what precedes the span has passed).
local function take_hole_until(holes, i, stop)
  if stop < holes[i + 1] then
    holes[i] = stop
  else
    table.remove(holes, i + 1)
    table.remove(holes, i)
  end
end

-- One reservation on a loaded key at now (reserve.lua's step; batch.lua runs
-- it once per caller, in order): tau, incr = cost * T, last = (cost - 1) * T,
-- max_wait (nil: forever). The key's tat and holes change only when a cost
-- is admitted. Returns reserve.lua's reply.
local function step(key, now, tau, incr, last, max_wait)
  local tat = key.tat
  -- A TAT ahead of now (also after the server's clock went back) only delays.
  local base = tat
  if base < now then base = now end

  if incr == 0 then
    -- Cost 0 is a status check: decided as a unit call at the TAT (holes are
    -- not counted, as in gcra::holes), storing nothing.
    local delay = sub(sub(base, tau), now)
    if max_wait and delay > max_wait then
      return {1, delay - max_wait, base - now}
    end
    return {0, delay, base - now, tat, -1}
  end

  local holes = live_holes(key.holes, now)
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
  if max_wait and delay > max_wait then
    if sub(last, tau) > max_wait then return {2} end
    return {1, delay - max_wait, base - now}
  end
  local new_tat, start, stop
  if hole then
    -- The TAT stays; the hole keeps what follows the span (what precedes it
    -- has passed).
    new_tat, start, stop = tat, slot, add(slot, incr)
    take_hole_until(holes, hole, stop)
  else
    new_tat = add(base, incr)
    start, stop = tat, new_tat
  end
  key.tat, key.holes = new_tat, holes
  return {0, delay, new_tat - now, start, stop}
end

-- Writes a key back, to expire exactly when its TAT has passed at now
-- (rounded up to the next millisecond) plus slack_ms: the key is then as good
-- as new (its holes lie below the TAT), so Redis forgets nothing that matters.
local function store(name, key, now, slack_ms)
  local fields = {string.format('%.0f', key.tat)}
  for i = 1, #key.holes do fields[i + 1] = string.format('%.0f', key.holes[i]) end
  local ttl = math.floor((key.tat - now) / 1000) + 1 + slack_ms
  redis.call('SET', name, table.concat(fields, ' '), 'PX', ttl)
end
