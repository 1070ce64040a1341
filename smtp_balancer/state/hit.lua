-- One response-rule match, counted and acted on atomically (fleet-wide: every
-- feedback daemon of every MTA host counts into the same keys).
-- Built by smtp_balancer/feedback/store.py after act.lua; key names match state/keys.py.
--
-- KEYS[1]  {prefix}:hits:<rule>:<endpoint>:<provider>  (routes the call; all keys share the hash tag)
-- ARGV     base rule endpoint provider uid count period action duration growth window max factor reason
--
-- Returns {code, seconds, strike}: 0 counting (seconds = matches so far),
-- 1 acted (seconds = duration), 2 already in force (seconds = time left), 3 skipped (drained).
local base, rule, ep, prov, uid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count, period = tonumber(ARGV[6]), tonumber(ARGV[7])
local action, duration, growth = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local window, maxd, factor, reason = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13], ARGV[14]

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = tonumber(t[1])

local target = action_target(base, action, ep, prov)
local blocked = action_blocked(action, target, now)
if blocked then return {blocked[1], blocked[2], 0} end

if count > 1 then
  local hits = KEYS[1]
  redis.call('ZREMRANGEBYSCORE', hits, '-inf', now_ms - period * 1000)
  redis.call('ZADD', hits, now_ms, uid)
  redis.call('PEXPIRE', hits, period * 1000)
  local n = redis.call('ZCARD', hits)
  if n < count then return {0, n, 0} end
  redis.call('DEL', hits)  -- fired: the next firing needs `count` new matches
end

local skey = base .. ':strikes:' .. rule .. ':' .. ep .. ':' .. prov
local strike = redis.call('INCR', skey)
redis.call('EXPIRE', skey, window)
local secs = math.floor(math.min(duration * growth ^ (strike - 1), maxd))
if secs < 1 then secs = 1 end
local why = reason .. ' (strike ' .. strike .. ', ' .. secs .. 's)'

apply_action(action, target, why, secs, factor, 'feedback:' .. rule, now)
return {1, secs, strike}
