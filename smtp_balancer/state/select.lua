-- One atomic routing decision: eligibility, weighted choice, quota reservation.
-- The arguments are built by smtp_balancer/decision/planner.py (Planner.encode):
--
-- KEYS[1]  the first stage's weights key. It routes the call in Redis Cluster:
--          every key this script touches starts with the same {prefix} hash tag
--          (base), so all of them live in KEYS[1]'s slot.
-- ARGV[1]  "base commit explain r n day hour now deadline"   (one string: fewer arguments
--          to pack; now: the decider's clock in epoch seconds, for a quarantine's `until`;
--          deadline: Redis TIME after which the decider has given up waiting, 0 = none)
-- ARGV[2]  plan, JSON: one [pool, spread, ignore_caps (0/1), [endpoint...], [YAML weight...],
--          [day cap...], [hour cap...], [provider caps...], [rate caps...]] per stage, in
--          order (caps -1 = none; both cap lists empty when no member of the stage is
--          capped). Provider caps per member: {provider: [day, hour]} while warming;
--          rate caps per member: {provider or "all": messages per minute}; each list
--          empty when no member has any; then 1 when the pool's weights are adaptive
-- ARGV[3]  providers: "google 2,yahoo 1", recipients per provider of this message
-- ARGV[4]  hashes: per stage "u u u" (sticky rendezvous values) or "", joined by "/"
--
-- Eligibility is checked lazily, only for the endpoints the draw lands on, so a
-- decision costs a few Redis calls whatever the pool size. The plan is decoded in
-- C (cjson) into flat arrays, no table per member, and live weights are read in at
-- most O(pool size), whatever the size of the hash. Hand-edited junk
-- never raises: it is reported back and the YAML value (or "active") applies.
-- Key names must match smtp_balancer/state/keys.py; values are read with the
-- grammar of values.lua, which state/scripts.py prepends.

local base, commit, explain, r, n, day, hour, now_s, deadline =
  string.match(ARGV[1], '^(%S+) (%d) (%d) (%S+) (%d+) (%d+) (%d+) (%S+) (%S+)$')
commit = commit == '1'
explain = explain == '1'
r = tonumber(r)
n = tonumber(n)
now_s = tonumber(now_s)

-- a decider that gave up waiting has decided without us: count nothing for it, or
-- its quota unit would be spent on a message that leaves by another route
deadline = tonumber(deadline)
if deadline and deadline > 0 then
  local t = redis.pcall('TIME')  -- pcall: an ACL without +time only loses the check
  if type(t) == 'table' and t[1] and tonumber(t[1]) + tonumber(t[2]) / 1e6 > deadline then
    return {'late', 0, '', 0, {}, {}}
  end
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
  return sb_count(v)
end

local function read_count(key, fld)
  local v = redis.pcall('HGET', key, fld or 'total')
  local c = (not is_err(v)) and count_of(v) or nil
  if c == nil then junk[#junk + 1] = 'counter|' .. key .. (fld and ('|' .. fld) or '') end
  return c
end

local now_sec = math.floor(now_s)

-- a `slow` action's factor on a rate cap ("<factor> <reason>", with a TTL), 1 = none
local function slow_of(key)
  local v = redis.pcall('GET', key)
  if type(v) ~= 'string' then return 1 end
  local f = sb_throttle(v)
  if not f then
    junk[#junk + 1] = 'slow|' .. key
    return 1
  end
  return f
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

-- the smallest live factor of one kind for this message's providers (1 = none), and
-- the reason of that one: "<factor> <reason>" with a TTL, written by the feedback
-- daemon (throttle: a rule's action; adaptive: recent outcomes)
local function smallest(kind, name)
  local tkeys = {base .. kind .. ':' .. name .. ':all'}
  for i, p in ipairs(provs) do tkeys[i + 1] = base .. kind .. ':' .. name .. ':' .. p[1] end
  local f, why = 1, ''
  local vals = redis.pcall('MGET', unpack(tkeys))
  if type(vals) == 'table' and not vals.err then
    for i, v in ipairs(vals) do
      if v then
        local x = sb_throttle(v)
        if not x then
          junk[#junk + 1] = kind .. '|' .. tkeys[i]
        elseif x < f then
          f, why = x, string.match(v, '^%S+ (.*)$') or ''
        end
      end
    end
  end
  return f, why
end

-- the share of its draws a member keeps: its throttle, and in an adaptive pool its
-- adaptive factor; memoised per member
local throttles = {}
local function throttle_of(name, adaptive)
  local memo = name .. (adaptive and '+' or '')
  local t = throttles[memo]
  if not t then
    local f = smallest('throttle', name)
    local note = ''
    if f < 1 then note = ', throttled to ' .. f .. ' of its weight' end
    if adaptive then
      local a, why = smallest('adaptive', name)
      if a < 1 then note = note .. ', adaptive factor ' .. a .. ' (' .. why .. ')' end
      if a < f then f = a end
    end
    t = {f, note}
    throttles[memo] = t
  end
  return t[1], t[2]
end

-- an endpoint's live status, read once per call however many stages list it
local status = {}
local function endpoint_status(name, day_cap, hour_cap, pcaps, rcaps)
  if status[name] then return status[name] end
  -- out of service: why, or false
  local st = {out = false, day_cap = day_cap, hour_cap = hour_cap, pcaps = pcaps, rcaps = rcaps, name = name}
  local skey = base .. 'endpoint:' .. name .. ':state'
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
    local skeys = {base .. 'suspend:' .. name .. ':all'}
    for i, p in ipairs(provs) do skeys[i + 1] = base .. 'suspend:' .. name .. ':' .. p[1] end
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
  st.day_key = base .. 'count:' .. name .. ':day:' .. day
  st.hour_key = base .. 'count:' .. name .. ':hour:' .. hour
  if day_cap >= 0 then st.day = read_count(st.day_key) end
  if hour_cap >= 0 then st.hour = read_count(st.hour_key) end
  status[name] = st
  return st
end

-- the rate scopes of this message an endpoint caps: "all" and its providers
local function rate_scopes(st)
  local out = {}
  local rc = st.rcaps
  if rc then
    if rc['all'] then out[#out + 1] = 'all' end
    for _, p in ipairs(provs) do
      if rc[p[1]] then out[#out + 1] = p[1] end
    end
  end
  return out
end

local function cap_block(st)
  if st.day_cap >= 0 then
    -- an unreadable counter blocks a capped endpoint: a warming IP must not be overrun
    if st.day == nil then return 'day cap: counter unreadable' end
    if st.day + n > st.day_cap then return 'day cap ' .. st.day .. '/' .. st.day_cap end
  end
  if st.hour_cap >= 0 then
    if st.hour == nil then return 'hour cap: counter unreadable' end
    if st.hour + n > st.hour_cap then return 'hour cap ' .. st.hour .. '/' .. st.hour_cap end
  end
  -- a provider's warm-up cap counts that provider's recipients only
  local pc = st.pcaps
  if pc then
    for _, p in ipairs(provs) do
      local c = pc[p[1]]
      if c then
        local caps_of = {{c[1], st.day_key, 'day'}, {c[2], st.hour_key, 'hour'}}
        for _, x in ipairs(caps_of) do
          if x[1] >= 0 then
            local used = read_count(x[2], p[1])
            if used == nil then return p[1] .. ' ' .. x[3] .. ' cap: counter unreadable' end
            if used + p[2] > x[1] then return p[1] .. ' ' .. x[3] .. ' cap ' .. used .. '/' .. x[1] end
          end
        end
      end
    end
  end
  -- a rate cap: messages in the last minute, fleet-wide; a `slow` action lowers it
  for _, scope in ipairs(rate_scopes(st)) do
    local cap = st.rcaps[scope]
    local f = slow_of(base .. 'slow:' .. st.name .. ':' .. scope)
    local slowed = ''
    if f < 1 then
      cap = math.max(1, math.floor(cap * f))
      slowed = ' (slowed to ' .. f .. ')'
    end
    local used = sb_window_used(base .. 'ratesec:' .. st.name .. ':' .. scope, now_sec)
    if used + 1 > cap then return scope .. ' rate cap ' .. used .. '/' .. cap .. ' a minute' .. slowed end
  end
  return false
end

-- index of the member drawn by rr in [0, 1) among `cands` (member indices, whose
-- weights add up to `total`), and the uniform remainder inside it
local function draw(cands, ws, total, rr)
  local target = rr * total
  local lo = 0
  local last = #cands
  for k, i in ipairs(cands) do
    local w = ws[i]
    if target < lo + w or k == last then return k, (target - lo) / w end
    lo = lo + w
  end
end

local chosen_name, chosen_w, chosen_stage, chosen_st
-- the plan is JSON, decoded in C (cjson): no Lua parsing per member
for stage_no, stage in ipairs(cjson.decode(ARGV[2])) do
  local pool, spread, ignore_caps = stage[1], stage[2], stage[3] == 1
  local names, ws, dcs, hcs, pcs, rcs = stage[4], stage[5], stage[6], stage[7], stage[8] or {}, stage[9] or {}
  local adaptive = stage[10] == 1
  local m = #names

  -- live weights of the members: HGETALL when the hash is no longer than the pool
  -- (usually it is empty), else HMGET of the members, so a hash of any size costs
  -- at most what the pool costs; fields of other names are never read
  local wkey = base .. 'pool:' .. pool .. ':weights'
  local set
  local hlen = redis.pcall('HLEN', wkey)
  if is_err(hlen) then
    junk[#junk + 1] = 'weights|' .. wkey
  elseif hlen > 0 and hlen <= m then
    local live = redis.call('HGETALL', wkey)
    set = {}
    for k = 1, #live, 2 do set[live[k]] = live[k + 1] end
  elseif hlen > m then
    local live = redis.call('HMGET', wkey, unpack(names))
    set = {}
    for i = 1, m do set[names[i]] = live[i] end
  end
  if set then
    for i = 1, m do
      local lv = set[names[i]]
      if lv then
        local w = sb_int(lv, 7)
        if w then
          ws[i] = w
        else
          junk[#junk + 1] = 'weight|' .. wkey .. '|' .. names[i]
        end
      end
    end
  end

  local us = {}
  local k = 0
  for u in string.gmatch(stage_hashes[stage_no] or '', '%S+') do
    k = k + 1
    us[k] = tonumber(u)
  end
  local sticky = k == m

  -- why a member cannot take this message, or false; memoised per member
  local whys = {}
  local function why_not(i)
    local why = whys[i]
    if why == nil then
      if ws[i] <= 0 then
        why = 'weight 0'
      else
        local st = endpoint_status(names[i], dcs[i] or -1, hcs[i] or -1, pcs[i], rcs[i])
        if st.out then
          why = st.out
        elseif ignore_caps then
          why = false
        else
          why = cap_block(st)
        end
      end
      whys[i] = why
    end
    return why
  end

  local pick
  local positive, total = {}, 0
  for i = 1, m do
    local w = ws[i]
    if w > 0 then
      positive[#positive + 1] = i
      total = total + w
    end
  end
  if sticky then
    -- weighted rendezvous hashing: the key keeps its top `spread` eligible endpoints
    local scores = {}
    for _, i in ipairs(positive) do scores[i] = -ws[i] / math.log(us[i]) end
    -- stable on ties, as the Python sort: the original order breaks them
    table.sort(positive, function(x, y)
      if scores[x] ~= scores[y] then return scores[x] > scores[y] end
      return x < y
    end)
    local top, top_total = {}, 0
    for _, i in ipairs(positive) do
      -- a throttled member keeps a `factor` share of the keys (decided by the key's own hash)
      if not why_not(i) then
        local f = throttle_of(names[i], adaptive)
        if f >= 1 or (us[i] * 1000003) % 1 < f then
          top[#top + 1] = i
          top_total = top_total + ws[i]
          if #top >= spread then break end
        end
      end
    end
    if #top > 0 then pick = top[draw(top, ws, top_total, r)] end
  else
    -- draw by weight; on an ineligible draw, drop it and redraw with the
    -- rescaled remainder of the same uniform value: exactly weighted among the eligible
    local rr = r
    while #positive > 0 do
      local d, rest = draw(positive, ws, total, rr)
      rest = math.min(math.max(rest, 0), 0.999999999)
      local i = positive[d]
      if not why_not(i) then
        -- throttled: accept with probability `factor`, reusing the uniform remainder
        local f = throttle_of(names[i], adaptive)
        if f >= 1 or rest < f then
          pick = i
          break
        end
        rest = (rest - f) / (1 - f)
      end
      rr = rest
      total = total - ws[i]
      table.remove(positive, d)
    end
  end

  if explain then
    for i = 1, m do
      local why = why_not(i)
      if why then
        verdicts[#verdicts + 1] = stage_no .. '|' .. names[i] .. '|' .. ws[i] .. '|0|' .. why
      else
        local note = 'eligible'
        if ignore_caps then note = 'eligible (caps ignored by overflow policy)' end
        local _, factors = throttle_of(names[i], adaptive)
        note = note .. factors
        verdicts[#verdicts + 1] = stage_no .. '|' .. names[i] .. '|' .. ws[i] .. '|1|' .. note
      end
    end
  end
  if pick then
    chosen_name, chosen_w, chosen_stage = names[pick], ws[pick], stage_no
    chosen_st = endpoint_status(names[pick], dcs[pick] or -1, hcs[pick] or -1, pcs[pick], rcs[pick])
    break
  end
end

if not chosen_name then
  return {'none', 0, '', 0, junk, verdicts}
end

if commit then
  local counters = {{chosen_st.day_key, DAY_TTL_S}, {chosen_st.hour_key, HOUR_TTL_S}}
  -- a capped field is only ever counted here and by lease.lua, before its message is
  -- decided, so one below zero was set by hand or lost its count to a reset: it
  -- starts again from 0 (as lease.lua does), or the cap would let its deficit through
  local capped = chosen_st.day_cap >= 0 or chosen_st.hour_cap >= 0
  local pc = chosen_st.pcaps
  local function add(key, fld, d, is_capped)
    local c = redis.pcall('HINCRBY', key, fld, d)
    if is_capped and not is_err(c) and c < d then
      redis.call('HSET', key, fld, d)
      return d
    end
    return c
  end
  for _, kt in ipairs(counters) do
    local total = add(kt[1], 'total', n, capped)
    if is_err(total) then
      junk[#junk + 1] = 'counter|' .. kt[1]
    else
      for _, p in ipairs(provs) do add(kt[1], p[1], p[2], pc and pc[p[1]] ~= nil) end
      -- a new counter gets its TTL once; later increments keep it
      if total == n then redis.call('EXPIRE', kt[1], kt[2]) end
    end
  end
  -- one message per rate scope, also when the overflow policy ignored the caps
  for _, scope in ipairs(rate_scopes(chosen_st)) do
    -- at the second of the decider's clock, where it gives a message back (rate_second)
    sb_window_add(base .. 'ratesec:' .. chosen_name .. ':' .. scope, now_sec, now_sec, 1)
  end
end
return {'ok', chosen_stage, chosen_name, chosen_w, junk, verdicts}
