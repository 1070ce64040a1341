-- Write the counter deltas of local decisions, and give back unused leases
-- (smtp_balancer/decision/quota.py).
-- KEYS[i]  a counter hash (all in one hash slot)
-- ARGV[i]  "ttl field delta field delta ..." for KEYS[i]
-- A new counter gets its TTL. Deltas are signed and applied as they are: a give-back
-- from another process (the requeue daemon's, for moved mail) may land before the
-- batched count it undoes, and the sum is right once both have. Readers take a count
-- below zero as 0, and lease.lua and select.lua start a capped one again at 0.
-- Returns the keys of the wrong type, which are skipped, and the counters whose total
-- is junk (a hand edit): the deciders then stop spending leases on them at once.
local junk = {}
for i, key in ipairs(KEYS) do
  local ttl, rest = string.match(ARGV[i], '^(%d+) (.*)$')
  local existed = redis.call('EXISTS', key) == 1
  for f, d in string.gmatch(rest, '(%S+) (%-?%d+)') do
    local r = redis.pcall('HINCRBY', key, f, tonumber(d))
    if type(r) == 'table' and r.err then
      junk[#junk + 1] = key
      break
    end
  end
  if junk[#junk] ~= key then
    local total = redis.pcall('HGET', key, 'total')
    if type(total) == 'table' or (total and not sb_count(total)) then junk[#junk + 1] = key end
  end
  if not existed then redis.call('EXPIRE', key, tonumber(ttl)) end
end
return junk
