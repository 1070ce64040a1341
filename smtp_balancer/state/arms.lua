-- Record the experiment arm of a batch of messages (smtp_balancer/engine/leases.py):
-- one call per round instead of a SET each, which cost the deciders more than the
-- decisions themselves.
-- KEYS[i]  {prefix}:arm:<queue id>    ARGV[1] the TTL in seconds, ARGV[i + 1] KEYS[i]'s
--          value "<experiment> <arm>"
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
