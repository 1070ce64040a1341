-- Reserve rate-cap slots for local decisions (smtp_balancer/decision/rates.py).
-- KEYS[1] {prefix}:rate:<endpoint>:<scope>, KEYS[2] {prefix}:slow:<endpoint>:<scope>
-- ARGV[1] slots wanted, ARGV[2] the configured messages per minute, ARGV[3] the
--         decider's clock in ms, ARGV[4] how long the slots are good for, in ms,
--         ARGV[5] a prefix naming this lease's slots ("<prefix>:<i>")
-- Each slot is scored at the END of its validity: a message decided with it at any
-- moment before then is counted no earlier than it happened, so select.lua's and
-- this script's window (the last 60 s, and anything scored later) never hold more
-- than the cap for any 60 s of decisions. Returns the slots granted (0: full).
local want, cap, now_ms, valid_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window_ms = RATE_WINDOW_MS

local slow = redis.pcall('GET', KEYS[2])
if type(slow) == 'string' then
  local f = sb_throttle(slow)
  if f then cap = math.max(1, math.floor(cap * f)) end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (now_ms - window_ms), '+inf')
local grant = math.min(want, cap - used)
if grant <= 0 then return 0 end
local args = {}
for i = 1, grant do
  args[#args + 1] = now_ms + valid_ms
  args[#args + 1] = ARGV[5] .. ':' .. i
end
redis.call('ZADD', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], 2 * window_ms + valid_ms)
return grant
