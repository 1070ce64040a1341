-- One rate rule evaluated for one (endpoint, provider), with hysteresis.
-- Built by smtp_balancer/feedback/store.py; key names match state/keys.py.
--
-- KEYS[1]  {prefix}:tripped:<rule>:<endpoint>:<provider>
-- ARGV     base rule endpoint provider measure above recover min_attempts action duration
--          then the per-minute outcome bucket keys of the window
--
-- Trips above `above` percent (over at least min_attempts) and suspends; stays
-- tripped, re-suspending when a suspension lapses, until the rate falls below
-- `recover`. Returns {code, rate x100, attempts}: 0 quiet, 1 suspended,
-- 2 still tripped, 3 re-armed.
local base, rule, ep, prov, measure = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local above, recover = tonumber(ARGV[6]), tonumber(ARGV[7])
local min_attempts, action, duration = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])

local attempts, bad = 0, 0
for i = 11, #ARGV do
  local v = redis.pcall('HMGET', ARGV[i], 'sent', 'deferred', 'bounced', 'expired')
  if type(v) == 'table' then
    local s, d, b, e = tonumber(v[1] or 0) or 0, tonumber(v[2] or 0) or 0,
      tonumber(v[3] or 0) or 0, tonumber(v[4] or 0) or 0
    attempts = attempts + s + d + b + e
    if measure == 'deferred' then bad = bad + d
    elseif measure == 'bounced' then bad = bad + b + e
    else bad = bad + d + b + e end
  end
end
local rate = 0
if attempts > 0 then rate = bad * 100 / attempts end
local rate100 = math.floor(rate * 100)

local tripped = KEYS[1]
local target = base .. ':suspend:' .. ep .. ':' .. (action == 'suspend_all' and 'all' or prov)
local function suspend()
  if redis.call('TTL', target) >= duration then return end
  redis.call('SET', target, 'rate rule ' .. rule .. ': ' .. measure .. ' ' ..
    string.format('%.1f', rate) .. '% of ' .. attempts .. ' attempts (above ' .. above .. '%)',
    'EX', duration)
end

if redis.call('EXISTS', tripped) == 1 then
  if rate < recover then
    redis.call('DEL', tripped)
    return {3, rate100, attempts}
  end
  if attempts >= min_attempts and redis.call('EXISTS', target) == 0 then suspend() end
  return {2, rate100, attempts}
end
if attempts >= min_attempts and rate > above then
  -- the flag outlives the window, so an idle pair re-arms only through a fresh evaluation
  redis.call('SET', tripped, rate100, 'EX', (#ARGV - 10) * 60 + duration)
  suspend()
  return {1, rate100, attempts}
end
return {0, rate100, attempts}
