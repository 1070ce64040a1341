-- Write reputation records (smtp_balancer/state/reputation.py): a field takes a record
-- only when it is about the same day or a later one than the one it holds, so an
-- older export imported after a newer one changes nothing, and the same export
-- imported twice changes nothing. A record of the same day and value as the one held
-- changes nothing either, whatever its detail: Postmaster Tools v1 and v2 exports of
-- one day say the same spam rate with different details.
-- KEYS[1] the record hash ({prefix}:reputation:<ep>:<provider> or :domainrep:...)
-- ARGV[1] expire-at (unix seconds: the newest day's end + retention), then
--         field, day (YYYY-MM-DD), record text ("<day> <value> <detail>") triples
-- Returns the fields that changed, in order.
local changed = {}
local expire_at = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local field, day, record = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], field)
  local old_day = old and string.match(old, '^(%d%d%d%d%-%d%d%-%d%d) ') or nil
  local same = old and string.match(old, '^(%S+ %S+)') == string.match(record, '^(%S+ %S+)')
  if not same and (old_day == nil or old_day <= day) then
    redis.call('HSET', KEYS[1], field, record)
    changed[#changed + 1] = field
  end
end
-- the key lives as long as its newest record: never shortened by an older import
local t = redis.call('TIME')
local ttl = redis.call('TTL', KEYS[1])
if ttl == -1 or (ttl >= 0 and tonumber(t[1]) + ttl < expire_at) then
  redis.call('EXPIREAT', KEYS[1], expire_at)
end
return changed
