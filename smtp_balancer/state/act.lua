-- The actions a feedback rule takes, shared by hit.lua and rate.lua (store.py
-- sends this file in front of each). Key names match state/keys.py.

-- the key an action writes
local function action_target(base, action, ep, prov)
  if action == 'suspend_provider' then return base .. ':suspend:' .. ep .. ':' .. prov end
  if action == 'suspend_all' then return base .. ':suspend:' .. ep .. ':all' end
  if action == 'throttle' then return base .. ':throttle:' .. ep .. ':' .. prov end
  if action == 'slow' then return base .. ':slow:' .. ep .. ':' .. prov end
  return base .. ':endpoint:' .. ep .. ':state'  -- quarantine
end

-- nil when the action may act; else {2, seconds left (-1: no end)} when it is
-- already in force, or {3, 0} when the endpoint is drained (an operator's call)
local function action_blocked(action, target, now)
  if action == 'quarantine' then
    local st = redis.pcall('HMGET', target, 'state', 'until')
    if type(st) == 'table' then
      if st[1] == 'drained' then return {3, 0} end
      if st[1] == 'quarantined' then
        local untl = tonumber(st[2] or '')
        if untl == nil then return {2, -1} end  -- manual or DNSBL quarantine: leave it be
        if untl > now then return {2, untl - now} end
      end
    end
    return nil
  end
  local ttl = redis.call('TTL', target)
  if ttl > 0 or ttl == -1 then return {2, ttl} end
  return nil
end

local function apply_action(action, target, why, secs, factor, by, now)
  if action == 'quarantine' then
    redis.call('DEL', target)
    redis.call('HSET', target, 'state', 'quarantined', 'reason', why, 'since', now,
      'by', by, 'until', now + secs)
  elseif action == 'throttle' or action == 'slow' then
    -- the factor leads the value, so select.lua reads both with one GET
    redis.call('SET', target, factor .. ' ' .. why, 'EX', secs)
  else
    redis.call('SET', target, why, 'EX', secs)
  end
end
