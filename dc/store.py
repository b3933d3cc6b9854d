"""The store: the only code that talks to Redis. Used in-process by zones, login and dc.

Every call is one round trip (a pipeline or one script call), whatever the batch size.
Redis errors surface as ``StoreUnavailable`` so callers answer ``unavailable`` (nothing
was acknowledged) instead of crashing.

No Redis client leaves this module: ``Store``, ``GroupStore`` and ``ModerationStore``
share one ``RedisLink``, which holds the client privately and is the one place a
``RedisError`` becomes ``StoreUnavailable``; every key comes from ``dc.keys``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack
import redis
from redis import Redis

from cluster import secrets
from dc import keys, retention

MAX_HISTORY_BYTES = 1024 * 1024 - 4096     # a history frame stays under 1 MiB
MEMORY_FIELDS = ("used_memory", "used_memory_human", "used_memory_peak",
                 "used_memory_peak_human", "used_memory_rss", "maxmemory",
                 "mem_fragmentation_ratio")


class StoreUnavailable(Exception):
    """Redis did not answer; nothing was stored. Retry later."""


@dataclass(slots=True)
class StoreItem:
    conv: str
    sender: str
    cid: str
    ts: int
    prefix: bytes
    index: str = ""      # users whose conversation list gains conv with its first message
    cap: int = 0         # newest messages kept (chat.retention count); 0 keeps everything
    deadline: int = 2 ** 53   # ms since epoch; not stored after it (the gate said unavailable)
    age: int = 0         # ms a message is kept (chat.retention age); 0 keeps everything


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")


class RedisLink:
    """One process's connection to Redis: a pooled client, kept private, and the one
    error path (``RedisError`` -> ``StoreUnavailable``). The stores of this module share it.

    ``run(fn, *args)`` calls ``fn(client, *args)`` (one command as ``Redis.hget``, or a
    function that fills and executes one pipeline); ``script(source)`` registers a Lua
    script and ``eval(script, keys, args)`` calls it.
    """

    __slots__ = ("_redis",)

    def __init__(self, url: str, max_connections: int = 32, timeout: float = 5.0):
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout)
        self._redis = Redis(connection_pool=pool)

    def run(self, fn, *args):
        try:
            return fn(self._redis, *args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def script(self, source: str):
        """A handle to call with ``eval`` (redis-py loads it on first use, by sha after)."""
        return self._redis.register_script(source)

    def eval(self, script, keys_: list, args: list):
        try:
            return script(keys_, args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def close(self) -> None:
        self._redis.connection_pool.disconnect()


class Store:
    def __init__(self, url: str, dedup_ttl: int = 86400, max_connections: int = 32,
                 timeout: float = 5.0):
        self._link = RedisLink(url, max_connections=max_connections, timeout=timeout)
        self.dedup_ttl = dedup_ttl
        self._store = self._link.script(keys.STORE_SCRIPT)
        self._cursor = self._link.script(keys.CURSOR_SCRIPT)

    @classmethod
    def from_config(cls, cfg, max_connections: int = 32) -> "Store":
        return cls(secrets.redis_url(cfg), dedup_ttl=cfg.chat.dedup_ttl, max_connections=max_connections)

    @property
    def link(self) -> RedisLink:
        """The connection, which ``GroupStore`` and ``ModerationStore`` share."""
        return self._link

    def ping(self) -> bool:
        return bool(self._link.run(Redis.ping))

    def close(self) -> None:
        self._link.close()

    def memory(self) -> dict:
        """Redis ``INFO memory``, the fields the operator view shows (bytes unless _human)."""
        info = self._link.run(Redis.info, "memory")
        return {k: info[k] for k in MEMORY_FIELDS if k in info}

    # -- users ------------------------------------------------------------------------
    def create_user(self, name: str, pwhash: str) -> bool:
        def run(r):
            pipe = r.pipeline(transaction=True)
            pipe.hsetnx(keys.user(name), "pw", pwhash)
            pipe.hsetnx(keys.user(name), "created", int(time.time() * 1000))
            return pipe.execute()[0]
        return bool(self._link.run(run))

    def create_token_users(self, names: list[str]) -> int:
        """Accounts a game backend authenticates itself: no password (``!`` is no argon2
        hash, so a password login always fails), tokens only. Returns how many were new."""
        return self.create_users(names, "!")

    def create_users(self, names: list[str], pwhash: str) -> int:
        """Many accounts sharing one password hash (the benchmark's), one pipeline; an
        existing account is left as it is. Returns how many were new."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.hsetnx(keys.user(name), "pw", pwhash)
                pipe.hsetnx(keys.user(name), "created", int(time.time() * 1000))
            return pipe.execute()
        return sum(1 for hit in self._link.run(run)[::2] if hit)

    def login_record(self, name: str) -> tuple[int, dict | None, set]:
        """What a login reads, in one round trip: failed logins in the window, the user
        record (None when missing) and the users it blocked."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            pipe.get(keys.failed_logins(name))
            pipe.hgetall(keys.user(name))
            pipe.smembers(keys.blocks(name))
            return pipe.execute()
        failed, raw, blocked = self._link.run(run)
        record = {k.decode(): v.decode() for k, v in raw.items()} if raw else None
        return int(failed or 0), record, {b.decode() for b in blocked}

    def get_user(self, name: str) -> dict | None:
        raw = self._link.run(Redis.hgetall, keys.user(name))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    def set_password(self, name: str, pwhash: str) -> None:
        self._link.run(Redis.hset, keys.user(name), "pw", pwhash)

    def existing_users(self, names) -> set:
        names = list(names)
        if not names:
            return set()

        def run(r):
            pipe = r.pipeline(transaction=False)
            for n in names:
                pipe.exists(keys.user(n))
            return pipe.execute()
        return {n for n, hit in zip(names, self._link.run(run)) if hit}

    def count_failed_login(self, name: str, window: int) -> int:
        def run(r):
            pipe = r.pipeline(transaction=True)
            pipe.set(keys.failed_logins(name), 0, ex=window, nx=True)
            pipe.incr(keys.failed_logins(name))
            return pipe.execute()[1]
        return int(self._link.run(run))

    def failed_logins(self, name: str) -> int:
        return int(self._link.run(Redis.get, keys.failed_logins(name)) or 0)

    # -- messages ---------------------------------------------------------------------
    def store_batch(self, items: list[StoreItem]) -> list[tuple[int, int, bool] | None]:
        """Store messages in order; returns (seq, ts, duplicate) per item, None for one
        whose deadline had passed by Redis' clock (not stored)."""
        if not items:
            return []
        # the old raw type for bytes: Redis' Lua cmsgpack predates msgpack's bin types
        blob = msgpack.packb([(it.conv, it.sender, it.cid, it.ts, it.prefix, it.index, it.cap,
                               it.deadline, it.age, retention.bucket_ms(it.age)) for it in items],
                             use_bin_type=False)
        raw = self._link.eval(self._store, [], [self.dedup_ttl, blob])
        return [None if r[0] == 2 else (r[1], r[2], r[0] == 1)
                for r in msgpack.unpackb(raw, raw=False)]

    def dedup_hits(self, triples) -> dict:
        """{(conv, sender, cid): (seq, ts)} for the triples already acked."""
        triples = list(triples)
        if not triples:
            return {}

        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv, sender, cid in triples:
                pipe.get(keys.dedup(conv, sender, cid))
            return pipe.execute()
        hits = {}
        for t, raw in zip(triples, self._link.run(run)):
            if raw:
                seq, ts = raw.decode().split(":")
                hits[t] = (int(seq), int(ts))
        return hits

    def last_seqs(self, convs) -> dict:
        convs = list(convs)
        if not convs:
            return {}
        raw = self._link.run(Redis.mget, [keys.seq(c) for c in convs])
        return {c: int(v or 0) for c, v in zip(convs, raw)}

    def kept_ranges(self, bounded: dict) -> dict:
        """{conv: (first, last)} for {conv: retention.Bounds}: the oldest seq still kept
        (last + 1 when none is) and the last seq, in one round trip."""
        convs = list(bounded)
        if not convs:
            return {}

        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv in convs:
                pipe.get(keys.seq(conv))
                if bounded[conv].age_ms > 0:
                    pipe.lindex(keys.checkpoints(conv), 0)
                    pipe.exists(keys.messages(conv))
            return pipe.execute()
        raw = iter(self._link.run(run))
        out = {}
        for conv in convs:
            last, bounds = int(next(raw) or 0), bounded[conv]
            checkpoint, exists = (next(raw), bool(next(raw))) if bounds.age_ms > 0 else (None, True)
            out[conv] = (retention.first_seq(last, bounds, checkpoint, exists), last)
        return out

    def history_many(self, reqs, max_bytes: int | None = MAX_HISTORY_BYTES) -> list[tuple[list[bytes], int]]:
        """For each (conv, after, limit): (records with seq > after, oldest first; last seq).
        Each list stops before ``max_bytes`` (a sync page's frame limit; None: no limit)."""
        return [(_bounded(page, max_bytes), last) for page, last in self._pages(reqs)]

    def _pages(self, reqs) -> list[tuple[list, int]]:
        """For each (conv, after, limit): (the HMGET of seqs after+1..after+limit, None
        where missing; last seq), in one round trip."""
        reqs = list(reqs)
        if not reqs:
            return []

        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv, after, limit in reqs:
                pipe.get(keys.seq(conv))
                if limit > 0:
                    pipe.hmget(keys.messages(conv), list(range(after + 1, after + 1 + limit)))
            return pipe.execute()
        raw = iter(self._link.run(run))
        out = []
        for _conv, _after, limit in reqs:
            last = int(next(raw) or 0)
            out.append((next(raw) if limit > 0 else [], last))
        return out

    def records(self, pairs) -> list:
        """The stored records of (conv, seq) pairs (None where missing)."""
        pairs = list(pairs)

        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv, seq in pairs:
                pipe.hget(keys.messages(conv), seq)
            return pipe.execute()
        return self._link.run(run) if pairs else []

    def history(self, conv: str, after: int, limit: int) -> tuple[list[bytes], int]:
        return self.history_many([(conv, after, limit)])[0]

    # -- cursors and offline delivery -------------------------------------------------
    def move_cursors(self, triples) -> int:
        """Apply (user, conv, seq) cursor moves in order, clamped to each last seq."""
        triples = list(triples)
        if not triples:
            return 0
        args = [len(triples)]
        for user, conv, seq in triples:
            args += (user, conv, int(seq))
        return int(self._link.eval(self._cursor, [], args))

    def welcome_state(self, user: str, replay_max: int, extra_convs=("sys",), floors=None, bounds=None):
        """What ``welcome`` needs: ({conv: last_seq}, [(conv, seq, record), ...]).

        The replay holds, per DM or group of the user, the first ``replay_max`` messages
        above the delivered cursor that are still kept (``bounds``: {kind: Bounds} of
        chat.retention; a cursor below what is kept starts at the oldest kept), oldest first.
        """
        def read_index(r):
            pipe = r.pipeline(transaction=False)
            pipe.smembers(keys.user_convs(user))
            pipe.hgetall(keys.cursors(user))
            return pipe.execute()
        members, cur_raw = self._link.run(read_index)
        convs = sorted(m.decode() for m in members)
        cursors = {k.decode(): int(v) for k, v in cur_raw.items()}
        for conv, seen in (floors or {}).items():
            cursors[conv] = max(cursors.get(conv, 0), seen)
        last = self.last_seqs(list(convs) + list(extra_convs))
        bounded = {c: bounds[retention.kind_of(c)] for c in convs
                   if bounds and any(bounds[retention.kind_of(c)])}
        for conv, (first, _) in self.kept_ranges(bounded).items():
            cursors[conv] = max(cursors.get(conv, 0), first - 1)
        wanted = [(c, cursors.get(c, 0), min(replay_max, last[c] - cursors.get(c, 0)))
                  for c in convs if last[c] > cursors.get(c, 0)]
        replay = []
        # the replay is pushed frame by frame: the 1 MiB bound of one history page does not
        # apply; a record trimmed meanwhile is skipped, every other keeps its own seq
        for (conv, after, _), (page, _last) in zip(wanted, self._pages(wanted)):
            replay.extend((conv, after + 1 + i, rec) for i, rec in enumerate(page) if rec is not None)
        return last, replay

    # -- login attempts and token epochs (issue 11) -----------------------------------
    def forget_failed_login(self, name: str) -> None:
        """Take back one ``count_failed_login`` (login counts an attempt before checking it;
        a success is no failure). Only while the window's key lives: a DECR after it
        expired would leave a -1 without expiry, one extra attempt forever."""
        script = self._link.script(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if n > 0 then return redis.call('DECR', KEYS[1]) end return 0")
        self._link.eval(script, [keys.failed_logins(name)], [])

    def bump_epoch(self, name: str) -> int | None:
        """Add 1 to the user's token epoch (``ep`` in ``u:<name>``): every token minted
        before is refused. The new epoch; None when the user does not exist (nothing made)."""
        script = self._link.script(
            "if redis.call('EXISTS', KEYS[1]) == 0 then return false end "
            "return redis.call('HINCRBY', KEYS[1], 'ep', 1)")
        got = self._link.eval(script, [keys.user(name)], [])
        return None if got is None else int(got)


def _bounded(records, max_bytes: int | None = MAX_HISTORY_BYTES) -> list[bytes]:
    """Drop missing entries and stop before the frame would pass ``max_bytes`` (1 MiB)."""
    out, size = [], 0
    for rec in records:
        if rec is None:
            continue
        size += len(rec)
        if max_bytes is not None and size > max_bytes:
            break
        out.append(rec)
    return out


class GroupStore:
    """Group membership in Redis; the zone owning the group is its only writer."""

    def __init__(self, store: Store):
        self._link = store.link

    def load(self, conv: str):
        """(owner, [members in join order]) or None when the group does not exist."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            pipe.hget(keys.group_info(conv), "owner")
            pipe.zrange(keys.group_members(conv), 0, -1)
            return pipe.execute()
        owner, members = self._link.run(run)
        if owner is None:
            return None
        return owner.decode(), [m.decode() for m in members]

    def create(self, conv: str, owner: str, members: list[str]) -> None:
        def run(r):
            pipe = r.pipeline(transaction=True)
            pipe.hset(keys.group_info(conv), mapping={"owner": owner, "n": len(members)})
            pipe.zadd(keys.group_members(conv), {m: i for i, m in enumerate(members)})
            pipe.get(keys.seq(conv))
            return pipe.execute()
        last = int(self._link.run(run)[2] or 0)
        self._index(conv, members, last)

    def add(self, conv: str, user: str) -> None:
        def run(r):
            pipe = r.pipeline(transaction=True)
            pipe.hincrby(keys.group_info(conv), "n", 1)
            pipe.get(keys.seq(conv))
            return pipe.execute()
        order, last = self._link.run(run)
        self._link.run(Redis.zadd, keys.group_members(conv), {user: int(order)}, True)
        self._index(conv, [user], int(last or 0))

    def _index(self, conv: str, users, last: int) -> None:
        """A member's conversation list gains the group; its cursor starts at the last seq."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            for u in users:
                pipe.sadd(keys.user_convs(u), conv)
                pipe.hset(keys.cursors(u), conv, last)
            return pipe.execute()
        self._link.run(run)

    def set_owner(self, conv: str, owner: str) -> None:
        self._link.run(Redis.hset, keys.group_info(conv), "owner", owner)

    def remove(self, conv: str, user: str, new_owner: str | None, empty: bool) -> None:
        def run(r):
            pipe = r.pipeline(transaction=True)
            pipe.zrem(keys.group_members(conv), user)
            pipe.srem(keys.user_convs(user), conv)
            pipe.hdel(keys.cursors(user), conv)
            if empty:
                pipe.delete(keys.group_info(conv), keys.group_members(conv))
            elif new_owner:
                pipe.hset(keys.group_info(conv), "owner", new_owner)
            return pipe.execute()
        self._link.run(run)


class ModerationStore:
    """Mutes, bans, blocks and room modes."""

    def __init__(self, store: Store):
        self._link = store.link

    def mutes(self) -> dict:
        raw = self._link.run(Redis.hgetall, keys.MUTES)
        return {k.decode(): int(v) for k, v in raw.items()}

    def set_mute(self, user: str, until_ms: int) -> None:
        if until_ms:
            self._link.run(Redis.hset, keys.MUTES, user, until_ms)
        else:
            self._link.run(Redis.hdel, keys.MUTES, user)

    def room_modes(self) -> dict:
        raw = self._link.run(Redis.hgetall, keys.ROOM_MODES)
        out = {}
        for k, v in raw.items():
            slow, dups = v.decode().split(",")
            out[k.decode()] = (float(slow), float(dups))
        return out

    def set_room_mode(self, conv: str, slow: float, dups: float) -> None:
        if slow or dups:
            self._link.run(Redis.hset, keys.ROOM_MODES, conv, f"{slow},{dups}")
        else:
            self._link.run(Redis.hdel, keys.ROOM_MODES, conv)

    def set_ban(self, user: str, reason: str | None) -> bool:
        if not self._link.run(Redis.exists, keys.user(user)):
            return False
        if reason:
            self._link.run(Redis.hset, keys.user(user), "ban", reason)
        else:
            self._link.run(Redis.hdel, keys.user(user), "ban")
        return True

    def blocks_many(self, users: list) -> dict:
        """{user: set of users they block}, one pipeline for all."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            for user in users:
                pipe.smembers(keys.blocks(user))
            return pipe.execute()
        return {u: {m.decode() for m in got} for u, got in zip(users, self._link.run(run))}

    def set_block(self, user: str, other: str, on: bool) -> None:
        fn = Redis.sadd if on else Redis.srem
        self._link.run(fn, keys.blocks(user), other)
