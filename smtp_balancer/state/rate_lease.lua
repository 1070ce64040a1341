-- Reserve rate-cap slots for local decisions (smtp_balancer/decision/rates.py).
-- KEYS[1] {prefix}:ratesec:<endpoint>:<scope>, KEYS[2] {prefix}:slow:<endpoint>:<scope>
-- ARGV[1] slots wanted, ARGV[2] the configured messages per minute, ARGV[3] the
--         decider's clock in ms, ARGV[4] the second the slots count at: the end of
--         their validity, so a message decided with one at any moment before then is
--         counted no earlier than it happened, and the window (window.lua) never holds
--         more than the cap for any 60 s of decisions.
-- Returns the slots granted (0: full).
local want, cap, now_ms, at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local slow = redis.pcall('GET', KEYS[2])
if type(slow) == 'string' then
  local f = sb_throttle(slow)
  if f then cap = math.max(1, math.floor(cap * f)) end
end

local now_sec = math.floor(now_ms / 1000)
local used = sb_window_used(KEYS[1], now_sec)
local grant = math.min(want, cap - used)
if grant <= 0 then return 0 end
sb_window_add(KEYS[1], now_sec, at, grant)
return grant
