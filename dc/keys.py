"""Every Redis key and Lua script zonechat uses, in one place. Nobody else builds a key.

Layout (``<conv>`` is a conversation id such as ``d:alice:bob``, ``g:guild``, ``r:world``):

=========================  ======  ===========================================================
key                        type    holds
=========================  ======  ===========================================================
``u:<user>``               hash    ``pw`` argon2id hash, ``created`` ms, ``ban`` reason
``lf:<user>``              string  failed logins in the current window (INCR + EXPIRE)
``seq:<conv>``             string  last seq of the conversation (INCR)
``m:<conv>``               hash    seq -> stored ``msg`` record (msgpack); rooms/sys capped
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


def user(name: str) -> str:
    return f"u:{name}"


def failed_logins(name: str) -> str:
    return f"lf:{name}"


def seq(conv: str) -> str:
    return f"seq:{conv}"


def messages(conv: str) -> str:
    return f"m:{conv}"


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
# ARGV: dedup_ttl, n, then n groups of 8: conv, sender, cid, ts, prefix, index, cap, deadline
#   prefix: the encoded msg map up to the value of its last key ``seq``
#   index:  space-separated users whose ucv set gains conv with its first message
#   cap:    keep at most this many messages (0 = all)
#   deadline: ms since epoch; past it (Redis' own clock) the message is not stored, because
#           the gate has answered `unavailable` ("X")
# Returns one string per message: "N<seq>:<ts>" stored now, "D<seq>:<ts>" a duplicate,
# "X" too late.
STORE_SCRIPT = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}
local i = 3
for m = 1, n do
  local conv, sender, cid, ts = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local prefix, index, cap = ARGV[i+4], ARGV[i+5], tonumber(ARGV[i+6])
  local deadline = tonumber(ARGV[i+7])
  i = i + 8
  local dk = 'dd:' .. conv .. ':' .. sender .. ':' .. cid
  local old = redis.call('GET', dk)
  if old then
    out[m] = 'D' .. old
  elseif now > deadline then
    out[m] = 'X'
  else
    local s = redis.call('INCR', 'seq:' .. conv)
    redis.call('HSET', 'm:' .. conv, s, prefix .. cmsgpack.pack(s))
    if cap > 0 and s > cap then
      redis.call('HDEL', 'm:' .. conv, s - cap)
    end
    if s == 1 and index ~= '' then
      for u in string.gmatch(index, '%S+') do
        redis.call('SADD', 'ucv:' .. u, conv)
      end
    end
    local v = s .. ':' .. ts
    redis.call('SET', dk, v, 'EX', ttl)
    out[m] = 'N' .. v
  end
end
return out
"""

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
