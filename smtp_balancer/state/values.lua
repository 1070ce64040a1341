-- The value grammar for hand-editable Redis values, shared by every script that
-- reads them (prepended by smtp_balancer/state/scripts.py). It must accept and
-- refuse exactly what smtp_balancer/state/values.py does: ASCII decimal integers
-- and decimals only. tonumber() alone would take "0x10", " 1e3" or "inf".
-- Each returns nil for junk; an absent value (false) is handled by the caller.

-- a non-negative integer of at most `digits` ASCII digits
local function sb_int(v, digits)
  if type(v) ~= 'string' or #v > digits or not string.match(v, '^[0-9]+$') then return nil end
  return tonumber(v)
end

-- a counter: an integer of at most 15 digits, and whether it is below zero, which
-- reads as 0. Deltas are signed (count.lua): a give-back from another process may
-- land before the count it undoes, and the sum is right once both have.
local function sb_count(v)
  if type(v) ~= 'string' then return nil end
  local below = string.sub(v, 1, 1) == '-'
  local c = sb_int(below and string.sub(v, 2) or v, 15)
  if c == nil then return nil end
  if below then return 0, true end
  return c, false
end

-- a non-negative decimal: digits, optionally a point and more digits (at most 32 chars)
local function sb_decimal(v)
  if type(v) ~= 'string' or #v > 32 then return nil end
  if string.match(v, '^[0-9]+$') or string.match(v, '^[0-9]+%.[0-9]+$') then return tonumber(v) end
  return nil
end

-- a throttle value "<factor> <reason>": the factor, a decimal strictly between 0 and 1
local function sb_throttle(v)
  if type(v) ~= 'string' then return nil end
  local f = sb_decimal(string.match(v, '^([^ ]*)'))
  if f and f > 0 and f < 1 then return f end
  return nil
end
