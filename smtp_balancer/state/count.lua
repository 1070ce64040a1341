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
  -- with the total among the deltas its reply says whether the counter is new (a
  -- counter at 0 gets its TTL again: harmless) and whether it is readable, so the
  -- common case costs no EXISTS and no HGET
  local has_total = string.match(' ' .. rest, ' total %-?%d') ~= nil
  local existed = has_total or redis.call('EXISTS', key) == 1
  local readable = nil
  for f, d in string.gmatch(rest, '(%S+) (%-?%d+)') do
    d = tonumber(d)
    local r = redis.pcall('HINCRBY', key, f, d)
    if type(r) == 'table' and r.err then
      junk[#junk + 1] = key
      break
    end
    if f == 'total' then
      readable = math.abs(r) < 1e15  -- sb_count's 15 digits
      if r == d then existed = false end
    end
  end
  if junk[#junk] ~= key then
    if readable == nil then
      local total = redis.pcall('HGET', key, 'total')
      readable = not (type(total) == 'table' or (total and not sb_count(total)))
    end
    if not readable then junk[#junk + 1] = key end
  end
  if not existed then redis.call('EXPIRE', key, tonumber(ttl)) end
end
return junk
