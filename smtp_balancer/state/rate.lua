-- One rate rule evaluated for one (endpoint, provider), with hysteresis.
-- Built by smtp_balancer/feedback/store.py after act.lua; key names match state/keys.py.
--
-- KEYS[1]  {prefix}:tripped:<rule>:<endpoint>:<provider>
-- ARGV     base rule endpoint provider measure above recover min_sample action duration factor
--          then the per-minute outcome bucket keys of the window
--
-- deferred, bounced and failed are shares of delivery attempts; complained is
-- complaints per delivered (sent) message. Trips above `above` percent (over at
-- least min_sample) and acts; stays tripped, acting again when the action lapses,
-- until the rate falls below `recover`. Returns {code, rate x10000, sample}:
-- 0 quiet, 1 acted, 2 still tripped, 3 re-armed.
local base, rule, ep, prov, measure = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local above, recover = tonumber(ARGV[6]), tonumber(ARGV[7])
local min_sample, action, duration, factor = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10]), ARGV[11]
local FIRST = 12

local sample, bad = 0, 0
for i = FIRST, #ARGV do
  local v = redis.pcall('HMGET', ARGV[i], 'sent', 'deferred', 'bounced', 'expired', 'complained')
  if type(v) == 'table' then
    local s, d, b, e, c = tonumber(v[1] or 0) or 0, tonumber(v[2] or 0) or 0,
      tonumber(v[3] or 0) or 0, tonumber(v[4] or 0) or 0, tonumber(v[5] or 0) or 0
    if measure == 'complained' then
      sample, bad = sample + s, bad + c
    else
      sample = sample + s + d + b + e
      if measure == 'deferred' then bad = bad + d
      elseif measure == 'bounced' then bad = bad + b + e
      else bad = bad + d + b + e end
    end
  end
end
local rate = 0
if sample > 0 then rate = bad * 100 / sample end
local rate10k = math.floor(rate * 10000)

local t = redis.call('TIME')
local now = tonumber(t[1])
local tripped = KEYS[1]
local target = action_target(base, action, ep, prov)
local noun = measure == 'complained' and ' delivered' or ' attempts'
local function act()
  if action_blocked(action, target, now) then return end
  local why = 'rate rule ' .. rule .. ': ' .. measure .. ' ' .. string.format('%.2f', rate) ..
    '% of ' .. sample .. noun .. ' (above ' .. above .. '%)'
  apply_action(action, target, why, duration, factor, 'feedback:' .. rule, now)
end

if redis.call('EXISTS', tripped) == 1 then
  if rate < recover then
    redis.call('DEL', tripped)
    return {3, rate10k, sample}
  end
  if sample >= min_sample then act() end
  return {2, rate10k, sample}
end
if sample >= min_sample and rate > above then
  -- the flag outlives the window, so an idle pair re-arms only through a fresh evaluation
  redis.call('SET', tripped, rate10k, 'EX', (#ARGV - FIRST + 1) * MINUTE_S + duration)
  act()
  return {1, rate10k, sample}
end
return {0, rate10k, sample}
