"""Every Redis key and Lua script zonechat uses, in one place. Nobody else builds a key.

Layout (``<conv>`` is a conversation id such as ``d:alice:bob``, ``g:guild``, ``r:world``):

=========================  ======  ===========================================================
key                        type    holds
=========================  ======  ===========================================================
``u:<user>``               hash    ``pw`` argon2id hash, ``created`` ms, ``ban`` reason
``lf:<user>``              string  failed logins in the current window (INCR + EXPIRE)
``seq:<conv>``             string  last seq of the conversation (INCR)
``m:<conv>``               hash    seq -> stored ``msg`` record (msgpack); trimmed per chat.retention
``mt:<conv>``              list    ``<seq>:<ts>`` age checkpoints (only for kinds kept for a time)
``dd:<conv>:<user>:<cid>`` string  ``<seq>:<ts>`` of an acked send, expires after dedup_ttl
``ucv:<user>``             set     the user's DMs with at least one message, and groups
``cur:<user>``             hash    conv -> delivered cursor (highest seq the user recv'd)
``gi:<g:name>``            hash    ``owner``, ``n`` (join counter: member order)
``gm:<g:name>``            zset    member -> join order (lowest = longest-standing)
``blk:<user>``             set     users this user blocked
``mod:mutes``              hash    user -> muted until (ms since epoch)
``mod:rooms``              hash    room -> ``<slow seconds>,<duplicate window seconds>``
=========================  ======  ===========================================================

The dedup key is built inside STORE_SCRIPT (below) the same way as ``dedup()``: the
script is part of this module so the layout stays in one file.
"""
from __future__ import annotations

from dc.retention import TRIM_MAX


def user(name: str) -> str:
    return f"u:{name}"


def failed_logins(name: str) -> str:
    return f"lf:{name}"


def seq(conv: str) -> str:
    return f"seq:{conv}"


def messages(conv: str) -> str:
    return f"m:{conv}"


def checkpoints(conv: str) -> str:
    """The age checkpoints of a conversation kept for a time (dc/retention.py)."""
    return f"mt:{conv}"


def dedup(conv: str, sender: str, cid: str) -> str:
    return f"dd:{conv}:{sender}:{cid}"


def user_convs(name: str) -> str:
    return f"ucv:{name}"


def cursors(name: str) -> str:
    return f"cur:{name}"


def group_info(conv: str) -> str:
    return f"gi:{conv}"


def group_members(conv: str) -> str:
    return f"gm:{conv}"


def blocks(name: str) -> str:
    return f"blk:{name}"


MUTES = "mod:mutes"
ROOM_MODES = "mod:rooms"


# Store a batch of messages atomically, in order.
# ARGV[1]: dedup_ttl; ARGV[2]: msgpack array of n arrays
#   [conv, sender, cid, ts, prefix, index, cap, deadline, age, bucket]
#   prefix: the encoded msg map up to the value of its last key ``seq``
#   index:  space-separated users whose ucv set gains conv with its first message
#   cap:    keep at most this many messages (0 = all)
#   deadline: ms since epoch; past it (Redis' own clock) the message is not stored, because
#           the gate has answered `unavailable`
#   age, bucket: keep no message older than age ms (0 = no bound), with a checkpoint in
#           mt:<conv> every bucket ms (dc/retention.py)
# One packed argument instead of 10n: Redis and redis-py each pay per argument.
# Returns a msgpack array of n entries: [0, seq, ts] stored now, [1, seq, ts] a duplicate
# (the first ack's seq and ts), [2] too late.
STORE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local items = cmsgpack.unpack(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local TRIM_MAX = %(trim_max)d

local function hdel_range(mk, from, to)
  local fields = {}
  for q = from, to do
    fields[#fields + 1] = q
    if #fields == 500 then
      redis.call('HDEL', mk, unpack(fields))
      fields = {}
    end
  end
  if #fields > 0 then redis.call('HDEL', mk, unpack(fields)) end
end

-- checkpoints "seq:ts" in mt:<conv>; every message before the second one is older than it
local function trim_by_age(conv, mk, s, ts, age, bucket, had)
  local tk = 'mt:' .. conv
  local last = redis.call('LINDEX', tk, -1)
  if not last then
    if had == 1 and s > 1 then redis.call('RPUSH', tk, '1:0') end
    redis.call('RPUSH', tk, s .. ':' .. ts)
  elseif ts - tonumber(string.match(last, ':(%%d+)$')) >= bucket then
    redis.call('RPUSH', tk, s .. ':' .. ts)
  end
  local cutoff, budget = ts - age, TRIM_MAX
  while budget > 0 do
    local second = redis.call('LINDEX', tk, 1)
    if not second then break end
    local s2, t2 = string.match(second, '^(%%d+):(%%d+)$')
    if tonumber(t2) > cutoff then break end
    local s1, t1 = string.match(redis.call('LINDEX', tk, 0), '^(%%d+):(%%d+)$')
    local from, to = tonumber(s1), tonumber(s2) - 1
    local upto = math.min(to, from + budget - 1)
    if upto >= from then hdel_range(mk, from, upto) end
    budget = budget - (upto - from + 1)
    if upto >= to then
      redis.call('LPOP', tk)
    else
      redis.call('LSET', tk, 0, (upto + 1) .. ':' .. t1)
    end
  end
  redis.call('PEXPIRE', mk, age + bucket)
  redis.call('PEXPIRE', tk, age + bucket)
end

local out = {}
for m = 1, #items do
  local it = items[m]
  local conv, ts, cap, age = it[1], it[4], it[7], it[9]
  local dk = 'dd:' .. conv .. ':' .. it[2] .. ':' .. it[3]
  local old = redis.call('GET', dk)
  if old then
    local s, t = string.match(old, '(%%d+):(%%d+)')
    out[m] = {1, tonumber(s), tonumber(t)}
  elseif now > it[8] then
    out[m] = {2}
  else
    local mk = 'm:' .. conv
    local had = 0
    if age > 0 then had = redis.call('EXISTS', mk) end
    local s = redis.call('INCR', 'seq:' .. conv)
    redis.call('HSET', mk, s, it[5] .. cmsgpack.pack(s))
    if cap > 0 and s > cap then
      redis.call('HDEL', mk, s - cap)
    end
    if age > 0 then
      trim_by_age(conv, mk, s, ts, age, it[10], had)
    end
    if s == 1 and it[6] ~= '' then
      for u in string.gmatch(it[6], '%%S+') do
        redis.call('SADD', 'ucv:' .. u, conv)
      end
    end
    redis.call('SET', dk, s .. ':' .. string.format('%%d', ts), 'EX', ttl)
    out[m] = {0, s, ts}
  end
end
return cmsgpack.pack(out)
""" % {"trim_max": TRIM_MAX}

# Move delivered cursors forward, clamped to the conversation's last seq.
# ARGV: n, then n triples: user, conv, seq.  Returns the number of cursors moved.
CURSOR_SCRIPT = """
local n = tonumber(ARGV[1])
local moved = 0
for k = 0, n - 1 do
  local u, conv, s = ARGV[2 + 3*k], ARGV[3 + 3*k], tonumber(ARGV[4 + 3*k])
  local last = tonumber(redis.call('GET', 'seq:' .. conv) or '0')
  if s > last then s = last end
  local cur = tonumber(redis.call('HGET', 'cur:' .. u, conv) or '0')
  if s > cur then
    redis.call('HSET', 'cur:' .. u, conv, s)
    moved = moved + 1
  end
end
return moved
"""
