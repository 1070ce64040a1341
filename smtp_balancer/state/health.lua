-- Set an endpoint's health state from a check (DNSBL, relay probe) without
-- trampling an operator: a drained endpoint is never touched, and a check only
-- restores what the same check took out.
-- KEYS[1] {prefix}:endpoint:<endpoint>:state
-- ARGV    state(quarantined|active) reason by now
-- Returns 1 when it wrote, 0 when it left the state alone.
local cur = redis.pcall('HMGET', KEYS[1], 'state', 'by')
local state, by = nil, nil
if type(cur) == 'table' and not cur.err then state, by = cur[1], cur[2] end
if state == 'drained' then return 0 end
if ARGV[1] == 'active' then
  if state ~= 'quarantined' or by ~= ARGV[3] then return 0 end
else
  if state == 'quarantined' then
    if by ~= ARGV[3] then return 0 end  -- someone else's quarantine stands
    redis.call('HSET', KEYS[1], 'reason', ARGV[2])
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'since', ARGV[4], 'by', ARGV[3])
return 1
