"""Every Redis key and Lua script zonechat uses, in one place. Nobody else builds a key.

Layout version 2 (``<conv>`` is a conversation id such as ``d:alice:bob``, ``g:guild``,
``r:world``; ``<s>`` is its zonechat slot, ``cluster.slots.slot_of(conv, chat.slots)``):

=============================  ======  =======================================================
key                            type    holds
=============================  ======  =======================================================
``u:{<user>}``                 hash    ``pw`` argon2id hash, ``created`` ms, ``ban`` reason, ``ep``, ``st`` status text, ``hid`` 1 if hidden
``lf:{<user>}``                string  failed logins in the current window (INCR + EXPIRE)
``ucv:{<user>}``               set     the user's DMs with at least one message, and groups
``cur:{<user>}``               hash    conv -> delivered cursor (highest seq the user recv'd)
``blk:{<user>}``               set     users this user blocked
``seq:{s<s>}<conv>``           string  last seq of the conversation (INCR)
``m:{s<s>}<conv>``             hash    seq -> stored ``msg`` record (msgpack); trimmed per chat.retention
``mt:{s<s>}<conv>``            list    ``<seq>:<ts>`` age checkpoints (only for kinds kept for a time)
``dd:{s<s>}<conv>:<u>:<cid>``  string  ``<seq>:<ts>`` of an acked send, expires after dedup_ttl
``gi:{s<s>}<conv>``            hash    ``owner``, ``n`` (join counter: member order)
``gm:{s<s>}<conv>``            zset    member -> join order (lowest = longest-standing)
``ep:{s<s>}``                  string  the slot's epoch: a store carrying another is refused
``rj:{<zone>}``                list    ``<ms> <conv>`` per durable conversation a zone stored into
                                       lately (zone/recent.py), the newest JOURNAL_MAX kept
``zc:slots``                   hash    center's slot table: ``version``, ``owners``, ``epochs``
``mod:mutes``                  hash    user -> muted until (ms since epoch)
``mod:rooms``                  hash    room -> ``<slow seconds>,<duplicate window seconds>``
``zc:layout``                  hash    ``version`` (2) and ``slots`` (chat.slots) of this dataset
=============================  ======  =======================================================

The ``{...}`` is Redis Cluster's hash tag: only it is hashed, so every key of one zonechat
slot lives in one Redis slot (a store script may touch all of them in one call) and every
key of one user in one Redis slot too (a login reads them in one round trip to one node).
On a single Redis the tags change nothing but the names. ``zonechat migrate`` renames a
version-1 dataset (the same names without tags) to this layout (``dc/layout.py``).

Scripts declare every key they touch (``KEYS``): Redis Cluster routes by them and refuses
undeclared or cross-slot keys.
"""
from __future__ import annotations

from cluster.slots import slot_of
from dc.retention import TRIM_MAX

VERSION = 2
LAYOUT = "zc:layout"
SLOT_TABLE = "zc:slots"
MUTES = "mod:mutes"
ROOM_MODES = "mod:rooms"


JOURNAL_MAX = 65536      # journal entries kept per zone: 5 s of a busy zone's conversations


def journal(zone: str) -> str:
    """A zone's journal of recent stores (zone/recent.py)."""
    return f"rj:{{{zone}}}"


def user(name: str) -> str:
    return f"u:{{{name}}}"


def failed_logins(name: str) -> str:
    return f"lf:{{{name}}}"


def user_convs(name: str) -> str:
    return f"ucv:{{{name}}}"


def cursors(name: str) -> str:
    return f"cur:{{{name}}}"


def blocks(name: str) -> str:
    return f"blk:{{{name}}}"


class Layout:
    """The keys of conversations, which carry their zonechat slot (``chat.slots`` of the
    dataset) as hash tag."""

    __slots__ = ("slots",)

    def __init__(self, slots: int):
        self.slots = slots

    def tag(self, conv: str) -> str:
        return f"{{s{slot_of(conv, self.slots)}}}"

    def slot(self, conv: str) -> int:
        return slot_of(conv, self.slots)

    def seq(self, conv: str) -> str:
        return f"seq:{self.tag(conv)}{conv}"

    def messages(self, conv: str) -> str:
        return f"m:{self.tag(conv)}{conv}"

    def checkpoints(self, conv: str) -> str:
        """The age checkpoints of a conversation kept for a time (dc/retention.py)."""
        return f"mt:{self.tag(conv)}{conv}"

    def dedup(self, conv: str, sender: str, cid: str) -> str:
        return f"dd:{self.tag(conv)}{conv}:{sender}:{cid}"

    def group_info(self, conv: str) -> str:
        return f"gi:{self.tag(conv)}{conv}"

    def group_members(self, conv: str) -> str:
        return f"gm:{self.tag(conv)}{conv}"

    @staticmethod
    def epoch(slot: int) -> str:
        """The fence of a zonechat slot (cluster/slots.py), in the slot's own Redis slot."""
        return f"ep:{{s{slot}}}"

    def store_keys(self, conv: str, sender: str, cid: str) -> tuple[str, str, str, str, str]:
        """The five KEYS of one STORE_SCRIPT item, in its order."""
        slot = slot_of(conv, self.slots)
        tag = f"{{s{slot}}}"
        return (f"seq:{tag}{conv}", f"m:{tag}{conv}", f"mt:{tag}{conv}", f"dd:{tag}{conv}:{sender}:{cid}",
                f"ep:{tag}")


# Store a batch of messages atomically, in order.
# KEYS: five per item, in Layout.store_keys order: seq, m, mt, dd, ep (one zonechat slot
#   per call on Redis Cluster; any mix on a single Redis)
# ARGV[1]: dedup_ttl; ARGV[2]: msgpack array of n arrays
#   [ts, prefix, cap, deadline, age, bucket, epoch, ref, replaced]
#   epoch:  the slot's epoch in the storing zone's table; below ep: not stored (fenced);
#           above it (Redis lost the last handover's INCR): ep is raised to it, fencing again
#   prefix: the encoded msg map up to the value of its last key ``seq``
#   cap:    keep at most this many messages (0 = all)
#   deadline: ms since epoch; past it (Redis' own clock) the message is not stored, because
#           the gate has answered `unavailable`
#   age, bucket: keep no message older than age ms (0 = no bound), with a checkpoint in
#           mt:<conv> every bucket ms (dc/retention.py)
#   ref, replaced: an edit or recall: message ``ref`` becomes ``replaced`` when the event is
#           stored (and ref is still kept); ref 0: a plain message
# One packed argument instead of 6n: Redis and redis-py each pay per argument. The user's
# conversation list (ucv) is not written here: its keys live in the user's slot.
# Returns a msgpack array of n entries: [0, seq, ts] stored now, [1, seq, ts] a duplicate
# (the first ack's seq and ts), [2] too late, [3] fenced (the slot has another owner now).
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

-- checkpoints "seq:ts" in tk; every message before the second one is older than it
local function trim_by_age(tk, mk, s, ts, age, bucket, had)
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
  local ts, prefix, cap, deadline, age = it[1], it[2], it[3], it[4], it[5]
  local base = 5 * (m - 1)
  local sk, mk, tk, dk = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
  local old = false
  local fence = tonumber(redis.call('GET', KEYS[base + 5]) or '0')
  if it[7] < fence then
    out[m] = {3}
  else
    if it[7] > fence then redis.call('SET', KEYS[base + 5], it[7]) end   -- a fence Redis lost
    old = redis.call('GET', dk)
  end
  if out[m] then
    -- fenced: nothing read, nothing written
  elseif old then
    local s, t = string.match(old, '(%%d+):(%%d+)')
    redis.call('EXPIRE', dk, ttl)   -- a write: a WAIT after this call covers the first store too
    out[m] = {1, tonumber(s), tonumber(t)}
  elseif now > deadline then
    out[m] = {2}
  else
    local had = 0
    if age > 0 then had = redis.call('EXISTS', mk) end
    local s = redis.call('INCR', sk)
    redis.call('HSET', mk, s, prefix .. cmsgpack.pack(s))
    if it[8] > 0 and redis.call('HEXISTS', mk, it[8]) == 1 then
      redis.call('HSET', mk, it[8], it[9])
    end
    if cap > 0 and s > cap then
      redis.call('HDEL', mk, s - cap)
    end
    if age > 0 then
      trim_by_age(tk, mk, s, ts, age, it[6], had)
    end
    redis.call('SET', dk, s .. ':' .. string.format('%%d', ts), 'EX', ttl)
    out[m] = {0, s, ts}
  end
end
return cmsgpack.pack(out)
""" % {"trim_max": TRIM_MAX}

# Group writes of the zone that owns the group's slot, fenced like stores.
# KEYS[1]: the slot's fence (ep:{s<n>}); KEYS[2..]: the keys the commands name (that slot)
# ARGV[1]: the writing zone's epoch of the slot; ARGV[2]: msgpack array of commands
#   [name, key index (into KEYS), arg, ...] (HSET, HINCRBY, ZADD, ZREM, DEL, GET only)
# Returns msgpack [false] when the fence is past the epoch (nothing run), else [true, answers].
GROUP_SCRIPT = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < fence then return cmsgpack.pack({false}) end
local out = {}
for i, c in ipairs(cmsgpack.unpack(ARGV[2])) do
  local args = {c[1], KEYS[c[2]]}
  for j = 3, #c do args[#args + 1] = c[j] end
  local got = redis.call(unpack(args))
  if got == false then got = '' end
  out[i] = got
end
return cmsgpack.pack({true, out})
"""
GROUP_COMMANDS = frozenset({"HSET", "HINCRBY", "ZADD", "ZREM", "DEL", "GET"})

# Move delivered cursors forward, never back.
# KEYS: n cursor hashes (cur:{user}), then, when ARGV[2] is 1, the n seq keys to clamp to.
# ARGV: n, clamp, then n pairs conv, seq. Without clamp (Redis Cluster: the seq keys live
# in other slots) the caller has clamped each seq to a last seq it read: seqs only grow,
# so that is never above the real one. Returns the number of cursors moved.
CURSOR_SCRIPT = """
local n = tonumber(ARGV[1])
local clamp = ARGV[2] == '1'
local moved = 0
for k = 1, n do
  local ck, conv, s = KEYS[k], ARGV[1 + 2*k], tonumber(ARGV[2 + 2*k])
  if clamp then
    local last = tonumber(redis.call('GET', KEYS[n + k]) or '0')
    if s > last then s = last end
  end
  local cur = tonumber(redis.call('HGET', ck, conv) or '0')
  if s > cur then
    redis.call('HSET', ck, conv, s)
    moved = moved + 1
  end
end
return moved
"""
