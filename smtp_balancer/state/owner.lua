-- One feedback daemon per instance name (state/instance_owner.py).
-- KEYS[1] {prefix}:feedback:<instance>:owner
-- ARGV[1] this daemon's holder value
-- ARGV[2] the lease in ms; 0 releases the key if it is ours
-- ARGV[3] optional: a holder value the caller judged stale (a dead process on its
--         own host): replaced if it is still the one there
-- Returns {outcome, the value found ('' when none), its PTTL in ms (0 when none)};
-- outcome: claimed, renewed, released, held (another daemon's: left alone),
-- replaced (a stale holder, or a value no daemon writes: not a string, or no TTL)
local ok, found = pcall(redis.call, 'GET', KEYS[1])
-- not a string (made by hand): described, not named by TYPE, which the ACL users lack
if not ok then found = '(not a string)' end
local ms = tonumber(ARGV[2])
if ok and found == ARGV[1] then
  if ms == 0 then
    redis.call('DEL', KEYS[1])
    return {'released', '', 0}
  end
  redis.call('PEXPIRE', KEYS[1], ms)
  return {'renewed', '', 0}
end
if not found then
  if ms == 0 then return {'released', '', 0} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
  return {'claimed', '', 0}
end
local ttl = redis.call('PTTL', KEYS[1])
-- every value a daemon writes is a string with a TTL: anything else was made by hand
local daemons = ok and ttl >= 0
if ms == 0 or (daemons and found ~= ARGV[3]) then return {'held', found, math.max(ttl, 0)} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return {'replaced', found, math.max(ttl, 0)}
