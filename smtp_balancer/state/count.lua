-- Write the counter deltas of local decisions, and give back unused leases
-- (smtp_balancer/decision/quota.py).
-- KEYS[i]  a counter hash (all in one hash slot)
-- ARGV[i]  "ttl field delta field delta ..." for KEYS[i]
-- A new counter gets its TTL. A negative total (a lease given back) never takes
-- the total below 0, and is skipped when the counter has already expired.
-- Returns the keys of the wrong type, which are skipped, and the counters whose total
-- is junk (a hand edit): the deciders then stop spending leases on them at once.
local junk = {}
for i, key in ipairs(KEYS) do
  local ttl, rest = string.match(ARGV[i], '^(%d+) (.*)$')
  local existed = redis.call('EXISTS', key) == 1
  local wrote = false
  for f, d in string.gmatch(rest, '(%S+) (%-?%d+)') do
    d = tonumber(d)
    local r
    if d < 0 then
      if existed then
        local cur = redis.pcall('HGET', key, f)
        if type(cur) == 'table' then
          r = cur
        else
          cur = sb_int(cur, 15) or 0
          r = redis.pcall('HSET', key, f, math.max(0, cur + d))
        end
      end
    else
      r = redis.pcall('HINCRBY', key, f, d)
      wrote = true
    end
    if type(r) == 'table' and r.err then
      junk[#junk + 1] = key
      break
    end
  end
  if junk[#junk] ~= key then
    local total = redis.pcall('HGET', key, 'total')
    if type(total) == 'table' or (total and not sb_int(total, 15)) then junk[#junk + 1] = key end
  end
  if wrote and not existed then redis.call('EXPIRE', key, tonumber(ttl)) end
end
return junk
