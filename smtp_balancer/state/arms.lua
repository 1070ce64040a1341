-- Record the experiment arm of a batch of messages (smtp_balancer/engine/leases.py,
-- and the feedback daemon for a requeued message's new queue id): one call per round.
-- KEYS[1] {prefix}:armdir:<day>; ARGV[1] the prefix, ARGV[2] the day (epoch days),
-- ARGV[3] the TTL in seconds (the day's end, and ARM_RECORD_TTL_S after), then pairs
-- of queue id and "<experiment> <arm> <decided at>". Returns the records new to the day.
local base, day, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local dir = KEYS[1]
local d = redis.call('HMGET', dir, 'level', 'split', 'n')
local level, split = sb_arm_shape(d[1], d[2])
-- a count the book's shape cannot hold is a hand edit: read as the load it splits at
local n = tonumber(d[3]) or 0
local most = ARM_LOAD * (2 ^ level + split)
if n < 0 or n > 2 * most then n = most end
local prefix = base .. ':arms:' .. day .. ':'
local touched = {}
local added = 0
for i = 4, #ARGV - 1, 2 do
  local key = prefix .. sb_arm_bucket(sb_arm_hash(ARGV[i]), level, split)
  added = added + redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  touched[key] = true
end
n = n + added
local splits = 0
while n > ARM_LOAD * (2 ^ level + split) and splits < #ARGV do  -- bounded: a split per record at most
  splits = splits + 1
  local size = 2 ^ level
  local from = prefix .. string.format('%d', split)
  local to_index = split + size
  local to = prefix .. string.format('%d', to_index)
  local flat = redis.call('HGETALL', from)
  local move, gone = {}, {}
  for j = 1, #flat, 2 do
    if sb_arm_hash(flat[j]) % (2 * size) == to_index then
      move[#move + 1] = flat[j]
      move[#move + 1] = flat[j + 1]
      gone[#gone + 1] = flat[j]
    end
  end
  if #gone > 0 then
    redis.call('HSET', to, unpack(move))
    redis.call('HDEL', from, unpack(gone))
    touched[to] = true
  end
  split = split + 1
  if split == size then
    level = level + 1
    split = 0
  end
end
redis.call('HSET', dir, 'level', level, 'split', split, 'n', n)
redis.call('EXPIRE', dir, ttl)
for key in pairs(touched) do redis.call('EXPIRE', key, ttl) end
return added
