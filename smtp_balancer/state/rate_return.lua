-- Give rate-cap slots back (smtp_balancer/decision/rates.py): leases' unspent ones, and
-- messages' that left by another route, a round's worth in one call.
-- KEYS[i] {prefix}:ratesec:<endpoint>:<scope>; ARGV[2i - 1] the second they were
-- counted at, ARGV[2i] how many. Returns how many the windows still held and gave back.
local given = 0
for i, key in ipairs(KEYS) do
  given = given + sb_window_take(key, tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]))
end
return given
