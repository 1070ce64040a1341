-- One atomic routing decision: eligibility, weighted choice, quota reservation.
-- The argument layout is built by smtp_balancer/selection.py (ScriptCall):
--
-- ARGV: commit(0|1) explain(0|1) r n nprov {provider count}*nprov
--       nep {name day_cap hour_cap}*nep
--       nstage {sticky spread ignore_caps m {ep_index yaml_weight u}*m}*nstage
-- KEYS: weights key per stage, then per endpoint:
--       state, day counter, hour counter, suspend:all, suspend:<provider>*nprov
--
-- Hand-edited junk never raises: it is reported back in the junk list and the
-- YAML value (or "active", or "no counter") applies instead.

local commit = ARGV[1] == '1'
local explain = ARGV[2] == '1'
local r = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local nprov = tonumber(ARGV[5])
local a = 6
local provs = {}
for i = 1, nprov do
  provs[i] = {ARGV[a], tonumber(ARGV[a + 1])}
  a = a + 2
end
local nep = tonumber(ARGV[a])
a = a + 1
local nstage_pos = a + 3 * nep
local nstage = tonumber(ARGV[nstage_pos])
local kpe = 4 + nprov
local eps = {}
for j = 1, nep do
  eps[j] = {name = ARGV[a], day_cap = tonumber(ARGV[a + 1]), hour_cap = tonumber(ARGV[a + 2]),
            k = nstage + (j - 1) * kpe}
  a = a + 3
end
a = nstage_pos + 1

local junk = {}
local verdicts = {}

local function is_err(v)
  return type(v) == 'table' and v.err ~= nil
end

local function count_of(v)
  if not v then return 0 end
  if string.match(v, '^%d+$') and #v <= 15 then return tonumber(v) end
  return nil
end

local status = {}
local function endpoint_status(j)
  if status[j] then return status[j] end
  local e = eps[j]
  local k = e.k
  local st = {blocked = false}
  local s = redis.pcall('HGET', KEYS[k + 1], 'state')
  if is_err(s) then
    junk[#junk + 1] = 'state|' .. KEYS[k + 1]
  elseif s and s ~= 'active' then
    if s == 'drained' or s == 'quarantined' then
      st.blocked = s
      if explain then
        local why = redis.pcall('HGET', KEYS[k + 1], 'reason')
        if type(why) == 'string' and why ~= '' then st.blocked = s .. ': ' .. why end
      end
    else
      junk[#junk + 1] = 'state|' .. KEYS[k + 1]
    end
  end
  if not st.blocked then
    local hits = redis.call('EXISTS', unpack(KEYS, k + 4, k + 4 + nprov))
    if hits > 0 then
      st.blocked = 'suspended'
      if explain then
        for i = k + 4, k + 4 + nprov do
          if redis.call('EXISTS', KEYS[i]) == 1 then
            local why = redis.pcall('GET', KEYS[i])
            local ttl = redis.call('TTL', KEYS[i])
            if type(why) ~= 'string' then why = '?' end
            st.blocked = 'suspended (' .. KEYS[i] .. ', ' .. ttl .. 's left): ' .. why
            break
          end
        end
      end
    end
  end
  if e.day_cap >= 0 then
    local v = redis.pcall('HGET', KEYS[k + 2], 'total')
    if is_err(v) then v = 'err' end
    st.day = count_of(v)
    if st.day == nil then junk[#junk + 1] = 'counter|' .. KEYS[k + 2] end
  end
  if e.hour_cap >= 0 then
    local v = redis.pcall('HGET', KEYS[k + 3], 'total')
    if is_err(v) then v = 'err' end
    st.hour = count_of(v)
    if st.hour == nil then junk[#junk + 1] = 'counter|' .. KEYS[k + 3] end
  end
  status[j] = st
  return st
end

local function cap_block(e, st)
  if e.day_cap >= 0 then
    -- an unreadable counter blocks a capped endpoint: a warming IP must not be overrun
    if st.day == nil then return 'day counter unreadable' end
    if st.day + n > e.day_cap then return 'day cap ' .. st.day .. '/' .. e.day_cap end
  end
  if e.hour_cap >= 0 then
    if st.hour == nil then return 'hour counter unreadable' end
    if st.hour + n > e.hour_cap then return 'hour cap ' .. st.hour .. '/' .. e.hour_cap end
  end
  return false
end

local chosen, chosen_stage
for s = 1, nstage do
  local sticky = ARGV[a] == '1'
  local spread = tonumber(ARGV[a + 1])
  local ignore_caps = ARGV[a + 2] == '1'
  local m = tonumber(ARGV[a + 3])
  a = a + 4
  local members, names = {}, {}
  for i = 1, m do
    members[i] = {j = tonumber(ARGV[a]), yw = tonumber(ARGV[a + 1]), u = tonumber(ARGV[a + 2])}
    names[i] = eps[members[i].j].name
    a = a + 3
  end
  local live = redis.pcall('HMGET', KEYS[s], unpack(names))
  if is_err(live) then
    junk[#junk + 1] = 'weights|' .. KEYS[s]
    live = {}
  end
  local cands = {}
  for i = 1, m do
    local mem = members[i]
    local e = eps[mem.j]
    local w = mem.yw
    local lv = live[i]
    if lv then
      if string.match(lv, '^%d+$') and #lv <= 7 then
        w = tonumber(lv)
      else
        junk[#junk + 1] = 'weight|' .. KEYS[s] .. '|' .. e.name
      end
    end
    local why = false
    if w <= 0 then
      why = 'weight 0'
    else
      local st = endpoint_status(mem.j)
      if st.blocked then
        why = st.blocked
      elseif not ignore_caps then
        why = cap_block(e, st)
      end
    end
    if why then
      if explain then verdicts[#verdicts + 1] = s .. '|' .. e.name .. '|' .. w .. '|0|' .. why end
    else
      cands[#cands + 1] = {j = mem.j, w = w, u = mem.u}
      if explain then
        local note = 'eligible'
        if ignore_caps then note = 'eligible (caps ignored by overflow policy)' end
        verdicts[#verdicts + 1] = s .. '|' .. e.name .. '|' .. w .. '|1|' .. note
      end
    end
  end
  if #cands > 0 then
    if sticky then
      -- weighted rendezvous hashing: the key keeps its top `spread` endpoints
      for _, c in ipairs(cands) do c.score = -c.w / math.log(c.u) end
      table.sort(cands, function(x, y) return x.score > y.score end)
      while #cands > spread do table.remove(cands) end
    end
    local total = 0
    for _, c in ipairs(cands) do total = total + c.w end
    local target = r * total
    local acc = 0
    chosen = cands[#cands]
    for _, c in ipairs(cands) do
      acc = acc + c.w
      if target < acc then
        chosen = c
        break
      end
    end
    chosen_stage = s
    break
  end
end

if not chosen then
  return {'none', 0, '', 0, junk, verdicts}
end

if commit then
  local e = eps[chosen.j]
  local k = e.k
  local counters = {{KEYS[k + 2], 259200}, {KEYS[k + 3], 172800}}
  for _, kt in ipairs(counters) do
    local ok = redis.pcall('HINCRBY', kt[1], 'total', n)
    if is_err(ok) then
      junk[#junk + 1] = 'counter|' .. kt[1]
    else
      for _, p in ipairs(provs) do redis.pcall('HINCRBY', kt[1], p[1], p[2]) end
      redis.call('EXPIRE', kt[1], kt[2])
    end
  end
end
return {'ok', chosen_stage, eps[chosen.j].name, chosen.w, junk, verdicts}
