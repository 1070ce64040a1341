-- The arm records of a batch of queue ids (smtp_balancer/state/arm_book.py): each
-- looked up in the day books from the newest day back, then as an earlier release
-- wrote it ({prefix}:arm:<queue id>, a string).
-- KEYS[1] the newest day's {prefix}:armdir:<day>; ARGV[1] the prefix, ARGV[2] the
-- newest day, ARGV[3] how many days before it, then the queue ids.
-- Returns each id's record, or nil.
local base, newest, back = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local books = {}
for day = newest, newest - back, -1 do
  local name = string.format('%d', day)
  local v = redis.call('HMGET', base .. ':armdir:' .. name, 'level', 'split')
  if v[1] then
    local level, split = sb_arm_shape(v[1], v[2])
    books[#books + 1] = {base .. ':arms:' .. name .. ':', level, split}
  end
end
local out = {}
for i = 4, #ARGV do
  local queue_id = ARGV[i]
  local found = false
  if #books > 0 then
    local h = sb_arm_hash(queue_id)
    for _, book in ipairs(books) do
      found = redis.call('HGET', book[1] .. sb_arm_bucket(h, book[2], book[3]), queue_id)
      if found then break end
    end
  end
  if not found then
    local old = redis.pcall('GET', base .. ':arm:' .. queue_id)
    if type(old) == 'string' then found = old end
  end
  out[#out + 1] = found
end
return out
