-- One atomic routing decision: eligibility, weighted choice, quota reservation.
-- The arguments are built by smtp_balancer/decision/planner.py (Planner.encode):
--
-- KEYS[1]  the first stage's weights key. It routes the call in Redis Cluster:
--          every key this script touches starts with the same {prefix} hash tag
--          (base), so all of them live in KEYS[1]'s slot.
-- ARGV[1]  "base commit explain r n day hour now"   (one string: fewer arguments to pack;
--          now: the decider's clock in epoch seconds, for a quarantine's `until`)
-- ARGV[2]  plan: "ep daycap hourcap,... / pool spread ignore_caps j:w,j:w / ..."
--          (caps -1 = none; j indexes the endpoint list; w is the YAML weight)
-- ARGV[3]  providers: "google 2,yahoo 1", recipients per provider of this message
-- ARGV[4]  hashes: per stage "u u u" (sticky rendezvous values) or "", joined by "/"
--
-- Eligibility is checked lazily, only for the endpoints the draw lands on, so a
-- decision costs a few Redis calls whatever the pool size. Hand-edited junk
-- never raises: it is reported back and the YAML value (or "active") applies.
-- Key names must match smtp_balancer/state/keys.py; values are read with the
-- grammar of values.lua, which state/scripts.py prepends.

local base, commit, explain, r, n, day, hour, now_s =
  string.match(ARGV[1], '^(%S+) (%d) (%d) (%S+) (%d+) (%d+) (%d+) (%S+)$')
commit = commit == '1'
explain = explain == '1'
r = tonumber(r)
n = tonumber(n)
now_s = tonumber(now_s)

local sections = {}
for sec in string.gmatch(ARGV[2], '[^/]+') do sections[#sections + 1] = sec end
local eps = {}
for name, dc, hc in string.gmatch(sections[1], '([^ ,]+) (%-?%d+) (%-?%d+)') do
  eps[#eps + 1] = {name = name, day_cap = tonumber(dc), hour_cap = tonumber(hc)}
end
local provs = {}
for p, c in string.gmatch(ARGV[3], '([^ ,]+) (%d+)') do provs[#provs + 1] = {p, tonumber(c)} end
local stage_hashes = {}
for h in string.gmatch(ARGV[4] .. '/', '([^/]*)/') do stage_hashes[#stage_hashes + 1] = h end

local junk = {}
local verdicts = {}

local function is_err(v)
  return type(v) == 'table' and v.err ~= nil
end

local function count_of(v)
  if not v then return 0 end
  return sb_int(v, 15)
end

local function read_count(key)
  local v = redis.pcall('HGET', key, 'total')
  local c = (not is_err(v)) and count_of(v) or nil
  if c == nil then junk[#junk + 1] = 'counter|' .. key end
  return c
end

local function quarantine_over(skey)
  local raw = redis.pcall('HGET', skey, 'until')
  if type(raw) ~= 'string' then return false end
  local untl = sb_decimal(raw)
  if not untl then
    junk[#junk + 1] = 'until|' .. skey  -- a quarantine with a junk `until` never lifts by itself
    return false
  end
  return untl <= now_s
end

-- the smallest live throttle factor for this message's providers (1 = none);
-- set by the feedback daemon's throttle action, "<factor> <reason>" with a TTL
local throttles = {}
local function throttle_of(j)
  if throttles[j] then return throttles[j] end
  local name = eps[j].name
  local tkeys = {base .. 'throttle:' .. name .. ':all'}
  for i, p in ipairs(provs) do tkeys[i + 1] = base .. 'throttle:' .. name .. ':' .. p[1] end
  local f = 1
  local vals = redis.pcall('MGET', unpack(tkeys))
  if type(vals) == 'table' and not vals.err then
    for i, v in ipairs(vals) do
      if v then
        local x = sb_throttle(v)
        if not x then
          junk[#junk + 1] = 'throttle|' .. tkeys[i]
        elseif x < f then
          f = x
        end
      end
    end
  end
  throttles[j] = f
  return f
end

local status = {}
local function endpoint_status(j)
  if status[j] then return status[j] end
  local e = eps[j]
  local st = {out = false}  -- out of service: why, or false
  local skey = base .. 'endpoint:' .. e.name .. ':state'
  local s = redis.pcall('HGET', skey, 'state')
  if is_err(s) then
    junk[#junk + 1] = 'state|' .. skey
  elseif s and s ~= 'active' then
    if s == 'quarantined' and quarantine_over(skey) then
      s = 'active'  -- a response rule's quarantine with `until` in the past: lifted
    elseif s == 'drained' or s == 'quarantined' then
      st.out = s
      if explain then
        local why = redis.pcall('HGET', skey, 'reason')
        if type(why) == 'string' and why ~= '' then st.out = s .. ': ' .. why end
      end
    else
      junk[#junk + 1] = 'state|' .. skey
    end
  end
  if not st.out then
    local skeys = {base .. 'suspend:' .. e.name .. ':all'}
    for i, p in ipairs(provs) do skeys[i + 1] = base .. 'suspend:' .. e.name .. ':' .. p[1] end
    if redis.call('EXISTS', unpack(skeys)) > 0 then
      st.out = 'suspended'
      if explain then
        for _, k in ipairs(skeys) do
          if redis.call('EXISTS', k) == 1 then
            local why = redis.pcall('GET', k)
            if type(why) ~= 'string' then why = '?' end
            st.out = 'suspended (' .. k .. ', ' .. redis.call('TTL', k) .. 's left): ' .. why
            break
          end
        end
      end
    end
  end
  e.day_key = base .. 'count:' .. e.name .. ':day:' .. day
  e.hour_key = base .. 'count:' .. e.name .. ':hour:' .. hour
  if e.day_cap >= 0 then st.day = read_count(e.day_key) end
  if e.hour_cap >= 0 then st.hour = read_count(e.hour_key) end
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
for s = 2, #sections do
  local pool, spread, ignore, members_text = string.match(sections[s], '^(%S+) (%d+) (%d) (.*)$')
  spread = tonumber(spread)
  local ignore_caps = ignore == '1'
  local members, names = {}, {}
  for j, w in string.gmatch(members_text, '(%d+):(%d+)') do
    j = tonumber(j)
    members[#members + 1] = {j = j, w = tonumber(w)}
    names[#names + 1] = eps[j].name
  end
  local hashes = {}
  for u in string.gmatch(stage_hashes[s - 1] or '', '%S+') do hashes[#hashes + 1] = tonumber(u) end
  local sticky = #hashes == #members

  local wkey = base .. 'pool:' .. pool .. ':weights'
  local live = redis.pcall('HMGET', wkey, unpack(names))
  if is_err(live) then
    junk[#junk + 1] = 'weights|' .. wkey
    live = {}
  end
  for i, m in ipairs(members) do
    local lv = live[i]
    if lv then
      local w = sb_int(lv, 7)
      if w then
        m.w = w
      else
        junk[#junk + 1] = 'weight|' .. wkey .. '|' .. names[i]
      end
    end
    if sticky then m.u = hashes[i] end
  end

  -- why a member cannot take this message, or false; memoised per member
  local function why_not(m)
    if m.why == nil then
      if m.w <= 0 then
        m.why = 'weight 0'
      else
        local st = endpoint_status(m.j)
        if st.out then
          m.why = st.out
        elseif ignore_caps then
          m.why = false
        else
          m.why = cap_block(eps[m.j], st)
        end
      end
    end
    return m.why
  end

  local function draw(cands, rr)
    local total = 0
    for _, c in ipairs(cands) do total = total + c.w end
    local target = rr * total
    local lo = 0
    for i, c in ipairs(cands) do
      if target < lo + c.w or i == #cands then return i, (target - lo) / c.w end
      lo = lo + c.w
    end
  end

  local pick
  local positive = {}
  for _, m in ipairs(members) do if m.w > 0 then positive[#positive + 1] = m end end
  if sticky then
    -- weighted rendezvous hashing: the key keeps its top `spread` eligible endpoints
    for _, m in ipairs(positive) do m.score = -m.w / math.log(m.u) end
    table.sort(positive, function(x, y) return x.score > y.score end)
    local top = {}
    for _, m in ipairs(positive) do
      -- a throttled member keeps a `factor` share of the keys (decided by the key's own hash)
      if not why_not(m) and (throttle_of(m.j) >= 1 or (m.u * 1000003) % 1 < throttle_of(m.j)) then
        top[#top + 1] = m
        if #top >= spread then break end
      end
    end
    if #top > 0 then pick = top[draw(top, r)] end
  else
    -- draw by weight; on an ineligible draw, drop it and redraw with the
    -- rescaled remainder of the same uniform value: exactly weighted among the eligible
    local rr = r
    while #positive > 0 do
      local i, rest = draw(positive, rr)
      rest = math.min(math.max(rest, 0), 0.999999999)
      if not why_not(positive[i]) then
        -- throttled: accept with probability `factor`, reusing the uniform remainder
        local f = throttle_of(positive[i].j)
        if f >= 1 or rest < f then
          pick = positive[i]
          break
        end
        rest = (rest - f) / (1 - f)
      end
      rr = rest
      table.remove(positive, i)
    end
  end

  if explain then
    for _, m in ipairs(members) do
      local why = why_not(m)
      local e = eps[m.j]
      if why then
        verdicts[#verdicts + 1] = (s - 1) .. '|' .. e.name .. '|' .. m.w .. '|0|' .. why
      else
        local note = 'eligible'
        if ignore_caps then note = 'eligible (caps ignored by overflow policy)' end
        local f = throttle_of(m.j)
        if f < 1 then note = note .. ', throttled to ' .. f .. ' of its weight' end
        verdicts[#verdicts + 1] = (s - 1) .. '|' .. e.name .. '|' .. m.w .. '|1|' .. note
      end
    end
  end
  if pick then
    chosen, chosen_stage = pick, s - 1
    break
  end
end

if not chosen then
  return {'none', 0, '', 0, junk, verdicts}
end

local e = eps[chosen.j]
if commit then
  endpoint_status(chosen.j)
  local counters = {{e.day_key, 259200}, {e.hour_key, 172800}}
  for _, kt in ipairs(counters) do
    local total = redis.pcall('HINCRBY', kt[1], 'total', n)
    if is_err(total) then
      junk[#junk + 1] = 'counter|' .. kt[1]
    else
      for _, p in ipairs(provs) do redis.pcall('HINCRBY', kt[1], p[1], p[2]) end
      -- a new counter gets its TTL once; later increments keep it
      if total == n then redis.call('EXPIRE', kt[1], kt[2]) end
    end
  end
end
return {'ok', chosen_stage, e.name, chosen.w, junk, verdicts}
