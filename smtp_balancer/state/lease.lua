-- Reserve warm-up quota for local decisions (smtp_balancer/decision/quota.py).
-- KEYS[1] the endpoint's day counter, KEYS[2] its hour counter (one hash slot)
-- ARGV[1] units wanted, ARGV[2] day cap, ARGV[3] hour cap (-1 = none), ARGV[4] the
--         field leased from: total, or a provider (its own warm-up cap)
-- Returns the units granted (added to both totals at once, so every daemon sees
-- them as used), 0 when a cap is reached, -1 (-2) when the capped day (hour)
-- counter is junk.
local want, caps = tonumber(ARGV[1]), {tonumber(ARGV[2]), tonumber(ARGV[3])}
local field = ARGV[4] or 'total'

-- a capped field is only ever counted here and by select.lua, before its message is
-- decided, so one below zero was set by hand or lost its count to a reset: it starts
-- again at 0, or the cap would let its deficit through
local function count_of(key)
  local v = redis.pcall('HGET', key, field)
  if type(v) == 'table' then return nil end
  if not v then return 0 end
  local c, below = sb_count(v)
  if below then redis.call('HSET', key, field, 0) end
  return c
end

local grant = want
for i = 1, 2 do
  if caps[i] >= 0 then
    local used = count_of(KEYS[i])
    -- an unreadable counter blocks a capped endpoint, as in select.lua
    if used == nil then return -i end
    grant = math.min(grant, caps[i] - used)
  end
end
if grant <= 0 then return 0 end
local ttls = {DAY_TTL_S, HOUR_TTL_S}
for i = 1, 2 do
  local existed = redis.call('EXISTS', KEYS[i]) == 1
  redis.pcall('HINCRBY', KEYS[i], field, grant)
  if not existed then redis.call('EXPIRE', KEYS[i], ttls[i]) end
end
return grant
