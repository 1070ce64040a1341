-- A rate cap's window (smtp_balancer/decision/rates.py), shared by select.lua,
-- rate_lease.lua and rate_return.lua: a hash {prefix}:ratesec:<endpoint>:<scope> of
-- messages per whole epoch second ("<second>" -> count), with "sum", the count of the
-- seconds still in the window, and "low", the oldest second "sum" holds. Its size
-- is bounded by the window's seconds, never by the cap.
--
-- The window at second s holds the seconds s - RATE_WINDOW_S .. s and any later one
-- (a lease's slots count at the end of their validity). Any 60 s of decisions lie in
-- at most 61 whole seconds, so a cap checked over them is never exceeded; it may
-- end up to a second early.
local RATE_KEY_TTL_S = 2 * RATE_WINDOW_S + 2

-- the whole count from the seconds themselves: a new window, or a hand-edited one
local function sb_window_recount(key, low)
  local sum = 0
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return 0, low end  -- nothing counted: nothing to write either
  local stale = {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f ~= 'sum' and f ~= 'low' then
      local sec, c = tonumber(f), tonumber(flat[i + 1])
      if not sec or sec < low then
        stale[#stale + 1] = f
      elseif c and c > 0 then
        sum = sum + c
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  redis.call('HSET', key, 'sum', sum, 'low', low)
  redis.call('EXPIRE', key, RATE_KEY_TTL_S)
  return sum, low
end

-- the messages in the window at second `now_sec`, the seconds before it dropped, and
-- the oldest second it holds (later than the window's start when a decider whose
-- clock is ahead dropped more)
local function sb_window_used(key, now_sec)
  local low = now_sec - RATE_WINDOW_S
  local v = redis.call('HMGET', key, 'sum', 'low')
  local sum, held = tonumber(v[1]), tonumber(v[2])
  if not sum or not held or sum < 0 or held > low + 2 * RATE_WINDOW_S
    or low - held > RATE_WINDOW_S then
    return sb_window_recount(key, low)
  end
  if held < low then
    local gone = {}
    for sec = held, low - 1 do gone[#gone + 1] = tostring(sec) end
    local counts = redis.call('HMGET', key, unpack(gone))
    for _, c in ipairs(counts) do sum = sum - (tonumber(c) or 0) end
    redis.call('HDEL', key, unpack(gone))
    if sum < 0 then sum = 0 end
    redis.call('HSET', key, 'sum', sum, 'low', low)
    held = low
  end
  return sum, held
end

-- count `n` messages at second `sec` in the window at `now_sec`: a second the window
-- already dropped (a decider whose clock is behind) counts at the oldest one it
-- holds, so it stays in the window longer, never shorter
local function sb_window_add(key, now_sec, sec, n)
  local _, low = sb_window_used(key, now_sec)
  if sec < low then sec = low end
  redis.call('HINCRBY', key, tostring(sec), n)
  -- a new window (sb_window_used writes nothing for one) gets its oldest second too
  if redis.call('HINCRBY', key, 'sum', n) == n then redis.call('HSET', key, 'low', low) end
  redis.call('EXPIRE', key, RATE_KEY_TTL_S)
end

-- take back `n` messages counted at second `sec`: nothing once it left the window
local function sb_window_take(key, sec, n)
  local v = redis.call('HMGET', key, 'low', tostring(sec), 'sum')
  local low, c, sum = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if not low or sec < low or not c or not sum then return 0 end
  n = math.min(n, c, sum)
  if n <= 0 then return 0 end
  redis.call('HSET', key, tostring(sec), c - n, 'sum', sum - n)
  return n
end
