-- A day's arm records (smtp_balancer/state/arm_book.py), shared by arms.lua (writes)
-- and arm_read.lua: linear hashing over small hashes, so each stays in Redis's compact
-- listpack encoding (at most 128 fields by default) whatever the day's volume:
--   {prefix}:armdir:<day>            HASH level, split, n (records)
--   {prefix}:arms:<day>:<bucket>     HASH queue id -> "<experiment> <arm> <decided at>"
-- A record's bucket is its queue id's hash modulo 2^level, or 2^(level + 1) for the
-- buckets below `split`, which have split already. A bucket splits in turn whenever
-- the day holds more than ARM_LOAD records per bucket: the unsplit ones then hold up
-- to twice that.
local ARM_LOAD = 40

local function sb_arm_hash(queue_id)
  return tonumber(string.sub(redis.sha1hex(queue_id), 1, 8), 16)
end

-- a book's level and split as read: a hand-edited one reads as a book's start (its
-- records may then not be found; new ones are)
local function sb_arm_shape(level, split)
  level, split = tonumber(level), tonumber(split)
  if not level or level < 0 or level > 31 or level % 1 ~= 0 then return 0, 0 end
  if not split or split < 0 or split >= 2 ^ level or split % 1 ~= 0 then split = 0 end
  return level, split
end

local function sb_arm_bucket(h, level, split)
  local size = 2 ^ level
  local a = h % size
  if a < split then a = h % (2 * size) end
  return string.format('%d', a)
end
