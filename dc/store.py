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
from urllib.parse import unquote, urlsplit

import gevent
import msgpack
import redis
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException

from cluster import secrets
from cluster.lru import LruSet
from dc import keys, layout, retention

MAX_HISTORY_BYTES = 1024 * 1024 - 4096     # a history frame stays under 1 MiB
INDEXED_MAX = 100000     # (user, conv) pairs known to be in the user's conversation list
MEMORY_FIELDS = ("used_memory", "used_memory_human", "used_memory_peak",
                 "used_memory_peak_human", "used_memory_rss", "maxmemory",
                 "mem_fragmentation_ratio")


CLUSTER_ERRORS = (redis.RedisError, RedisClusterException)


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
    epoch: int = 0       # its slot's epoch in the zone's table (the fence: cluster/slots.py)
    ref: int = 0         # an edit's or recall's target seq, rewritten to ``replaced`` if kept
    replaced: bytes = b""


FENCED = "fenced"        # a store_batch answer: the slot's epoch moved on, nothing stored


def _check_acked(acked: int, replicas: int, wait_ms: int, where: str = "primary") -> None:
    """WAIT's answer: fewer replicas than wanted is ``StoreUnavailable`` (the write is on
    the primary; the client's resend is deduplicated and waits again)."""
    if acked < replicas:
        raise StoreUnavailable(f"redis: {where}: {acked} of {replicas} replicas acked within {wait_ms} ms")


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}")


class RedisLink:
    """One process's connection to Redis: a pooled client, kept private, and the one
    error path (``RedisError`` -> ``StoreUnavailable``). The stores of this module share it.

    ``run(fn, *args)`` calls ``fn(client, *args)`` (one command as ``Redis.hget``, or a
    function that fills and executes one pipeline); ``script(source)`` registers a Lua
    script and ``eval(script, keys, args)`` calls it. ``ClusterLink`` is the same on a
    Redis Cluster, plus one pipeline per master.
    """

    __slots__ = ("_redis",)
    cluster = False

    def __init__(self, url: str, max_connections: int = 32, timeout: float = 5.0):
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout)
        self._redis = Redis(connection_pool=pool)

    def mget(self, names: list) -> list:
        return self.run(Redis.mget, names)

    def info_memory(self) -> dict:
        return self.run(Redis.info, "memory")

    def incr_all(self, names: list, replicas: int, wait_ms: int) -> dict:
        """{name: INCR name}, then WAIT for ``replicas``, in one pipeline."""
        def fill(pipe):
            for name in names:
                pipe.incr(name)
            if replicas:
                pipe.wait(replicas, wait_ms)
        got = self.pipeline(fill)
        if replicas:
            _check_acked(got.pop(), replicas, wait_ms)
        return dict(zip(names, got))

    def touch_per_master(self, names: list, ttl: int, replicas: int, wait_ms: int) -> None:
        """Rewrite the expiry of ``names`` (a write) and WAIT: an answer read from them is
        then on ``replicas`` replicas, as a fresh write is."""
        def fill(pipe):
            for name in names:
                pipe.expire(name, ttl)
            pipe.wait(replicas, wait_ms)
        _check_acked(self.pipeline(fill)[-1], replicas, wait_ms)

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

    def pipeline(self, fill, scripts=()) -> list:
        """One round trip: ``fill(pipe)`` queues commands (``evalsha`` of ``scripts``
        among them). When Redis answers NOSCRIPT (restarted, or failed over, since the
        scripts were loaded) they are loaded and the pipeline runs once more: ``fill``
        must queue only what is safe to repeat (a script that answered NOSCRIPT did
        not run). The first error of any command raises."""
        def run(r):
            for attempt in (1, 2):
                pipe = r.pipeline(transaction=False)
                fill(pipe)
                results = pipe.execute(raise_on_error=False)
                if attempt == 2 or not any(isinstance(x, NoScriptError) for x in results):
                    break
                for script in scripts:
                    r.script_load(script.script)
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        return self.run(run)

    def close(self) -> None:
        self._redis.connection_pool.disconnect()


class ClusterLink(RedisLink):
    """The link to a Redis Cluster (redis-py's cluster client: slot map, MOVED, failover).

    Commands and pipelines route by key as on one Redis; ``eval_per_master`` sends
    script calls (each to one Redis slot) as one pipeline per master holding them, all
    masters at once, each ending with ``WAIT`` when writes must reach replicas before the
    caller acknowledges them. Any error refreshes the slot map (a failed-over master's
    slots move to its promoted replica) and raises ``StoreUnavailable``: the caller answers
    ``unavailable`` and the client's resend is deduplicated.
    """

    __slots__ = ()
    cluster = True

    def __init__(self, seeds, username=None, password=None, max_connections: int = 32,
                 timeout: float = 5.0, tls: bool = False):
        try:
            self._redis = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in seeds], username=username,
                password=password, max_connections=max_connections, socket_timeout=timeout,
                socket_connect_timeout=timeout, ssl=tls)
        except CLUSTER_ERRORS as exc:
            raise _unavailable(exc) from exc

    @classmethod
    def from_config(cls, cfg, max_connections: int = 32, timeout: float = 5.0) -> "ClusterLink":
        url = urlsplit(cfg.redis.url) if cfg.redis.url else None
        username = unquote(url.username) if url and url.username else None
        password = unquote(url.password) if url and url.password else None
        return cls(cfg.redis.seeds(), username, password, max_connections, timeout,
                   tls=bool(url and url.scheme == "rediss"))

    def mget(self, names: list) -> list:
        return self.run(RedisCluster.mget_nonatomic, names)

    def info_memory(self) -> dict:
        """{node: INFO memory} of every master."""
        return self.run(lambda r: r.info("memory", target_nodes=RedisCluster.PRIMARIES))

    def close(self) -> None:
        self._redis.close()

    def run(self, fn, *args):
        try:
            return fn(self._redis, *args)
        except CLUSTER_ERRORS as exc:
            self._refresh()
            raise _unavailable(exc) from exc

    def _refresh(self) -> None:
        try:
            self._redis.nodes_manager.initialize()
        except CLUSTER_ERRORS:
            pass          # the next call tries again

    def eval_per_master(self, script, calls: list, replicas: int = 0, wait_ms: int = 0) -> list:
        """Each of ``calls`` ((keys, args), the keys of one Redis slot) as EVALSHA, one
        pipeline per master; each call's answer, in order, or the ``StoreUnavailable`` of
        its master (the other masters' calls ran: one failed master fails only its slots)."""
        by_node: dict = {}
        try:
            for i, (names, _) in enumerate(calls):
                node = self._redis.get_node_from_key(names[0])
                by_node.setdefault(node.name, (node, []))[1].append(i)
        except CLUSTER_ERRORS as exc:
            self._refresh()
            raise _unavailable(exc) from exc
        jobs = [(idx, gevent.spawn(self._node_calls, node, [calls[i] for i in idx], script, replicas, wait_ms))
                for node, idx in by_node.values()]
        gevent.joinall([job for _, job in jobs])
        out: list = [None] * len(calls)
        for idx, job in jobs:
            try:
                answers = job.get()
            except StoreUnavailable as exc:
                answers = [exc] * len(idx)
            for i, answer in zip(idx, answers):
                out[i] = answer
        return out

    def _node_calls(self, node, calls: list, script, replicas: int, wait_ms: int) -> list:
        try:
            results = self._node_pipeline(self._redis.get_redis_connection(node), calls, script, replicas, wait_ms)
        except CLUSTER_ERRORS as exc:
            self._refresh()
            raise _unavailable(exc) from exc
        if replicas:
            _check_acked(results[-1], replicas, wait_ms, node.name)
        return results[:len(calls)]

    @staticmethod
    def _node_pipeline(conn: Redis, calls: list, script, replicas: int, wait_ms: int) -> list:
        for attempt in (1, 2):
            pipe = conn.pipeline(transaction=False)
            for names, args in calls:
                pipe.evalsha(script.sha, len(names), *names, *args)
            if replicas:
                pipe.wait(replicas, wait_ms)
            results = pipe.execute(raise_on_error=False)
            if attempt == 2 or not any(isinstance(x, NoScriptError) for x in results):
                break
            conn.script_load(script.script)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def touch_per_master(self, names: list, ttl: int, replicas: int, wait_ms: int) -> None:
        """Rewrite the expiry of ``names`` (a write) and WAIT on each master holding them:
        an answer read from them is then on ``replicas`` replicas, as a fresh write is."""
        self._per_master(names, lambda pipe, name: pipe.expire(name, ttl), replicas, wait_ms)

    def incr_all(self, names: list, replicas: int, wait_ms: int) -> dict:
        """{name: INCR name}, each master's then WAITing for ``replicas``."""
        return self._per_master(names, lambda pipe, name: pipe.incr(name), replicas, wait_ms)

    def _per_master(self, names: list, command, replicas: int, wait_ms: int) -> dict:
        """``command(pipe, name)`` for each of ``names``, one pipeline per master ending with
        WAIT (the writes and the WAIT on one connection); {name: answer}."""
        by_node: dict = {}
        try:
            for name in names:
                node = self._redis.get_node_from_key(name)
                by_node.setdefault(node.name, (node, []))[1].append(name)
        except CLUSTER_ERRORS as exc:
            self._refresh()
            raise _unavailable(exc) from exc
        jobs = [gevent.spawn(self._node_writes, node, group, command, replicas, wait_ms)
                for node, group in by_node.values()]
        gevent.joinall(jobs)
        out: dict = {}
        for job in jobs:
            out.update(job.get())
        return out

    def _node_writes(self, node, names: list, command, replicas: int, wait_ms: int) -> dict:
        try:
            pipe = self._redis.get_redis_connection(node).pipeline(transaction=False)
            for name in names:
                command(pipe, name)
            if replicas:
                pipe.wait(replicas, wait_ms)
            got = pipe.execute()
        except CLUSTER_ERRORS as exc:
            self._refresh()
            raise _unavailable(exc) from exc
        if replicas:
            _check_acked(got.pop(), replicas, wait_ms, node.name)
        return dict(zip(names, got))


class Store:
    def __init__(self, url: str | None = None, dedup_ttl: int = 86400, max_connections: int = 32,
                 timeout: float = 5.0, slots: int = 1024, link: RedisLink | None = None,
                 replicas: int = 0, wait_ms: int = 1000):
        self._link = link or RedisLink(url, max_connections=max_connections, timeout=timeout)
        self.dedup_ttl = dedup_ttl
        self.layout = keys.Layout(slots)
        self.replicas, self.wait_ms = replicas, wait_ms     # WAIT before an ack (Redis Cluster)
        self._store = self._link.script(keys.STORE_SCRIPT)
        self._cursor = self._link.script(keys.CURSOR_SCRIPT)
        self._indexed = LruSet(INDEXED_MAX)

    @classmethod
    def from_config(cls, cfg, max_connections: int = 32) -> "Store":
        """The store of ``cfg``, its dataset's layout checked (``dc.layout.LayoutError``)."""
        rc = cfg.redis
        link = ClusterLink.from_config(cfg, max_connections) if rc.mode == "cluster" else None
        store = cls(None if link else secrets.redis_url(cfg), dedup_ttl=cfg.chat.dedup_ttl,
                    max_connections=max_connections, slots=cfg.chat.slots, link=link,
                    replicas=rc.replicas_acked, wait_ms=rc.wait_timeout_ms)
        store.check_layout()
        return store

    def check_layout(self) -> dict:
        """Refuse a dataset of another layout or chat.slots (an empty one gets ours)."""
        return self._link.run(layout.check, self.layout.slots)

    @property
    def link(self) -> RedisLink:
        """The connection, which ``GroupStore`` and ``ModerationStore`` share."""
        return self._link

    def ping(self) -> bool:
        return bool(self._link.run(Redis.ping))

    def close(self) -> None:
        self._link.close()

    def memory(self) -> dict:
        """Redis ``INFO memory``, the fields the operator view shows (bytes unless _human);
        on Redis Cluster the masters' sums (and the highest fragmentation ratio)."""
        info = self._link.info_memory()
        if info and all(isinstance(v, dict) for v in info.values()):
            return _summed_memory(list(info.values()))
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

    def set_status(self, name: str, text: str | None, hidden: bool | None) -> None:
        """A user's presence status, kept with the account (fields ``st`` and ``hid``);
        None leaves that field as it is."""
        fields = {k: v for k, v in (("st", text), ("hid", None if hidden is None else "1" if hidden else ""))
                  if v is not None}
        self._link.run(lambda r: r.hset(keys.user(name), mapping=fields))

    def read_positions(self, wanted: list) -> list[dict]:
        """For each (conv, members): {member: delivered cursor} (0 for none), one pipeline."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv, members in wanted:
                for m in members:
                    pipe.hget(keys.cursors(m), conv)
            return pipe.execute()
        got = iter(self._link.run(run)) if wanted else iter(())
        return [{m: int(next(got) or 0) for m in members} for _conv, members in wanted]

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
    def store_batch(self, items: list[StoreItem], partial: bool = False, journal=None) -> list:
        """Store messages in order; returns (seq, ts, duplicate) per item, None for one
        whose deadline had passed by Redis' clock (not stored), ``FENCED`` for one whose
        slot's epoch is no longer the item's (not stored). With ``partial`` (Redis
        Cluster), an item whose master failed is its ``StoreUnavailable`` and the others
        are stored; without, the first such failure raises. ``journal``: (zone, entries)
        appended to the zone's journal (zone/recent.py) before the messages are stored.

        The users' conversation lists gain the DMs this process has not indexed yet
        before the messages are stored (a crash between leaves an entry without
        messages, never messages nobody's list names). On one Redis: one round trip, one
        script call. On Redis Cluster: one script call per zonechat slot, one pipeline
        per master ending with WAIT (``redis.min_replicas_acked``)."""
        if not items:
            return []
        index = self._to_index(items)
        journal = (keys.journal(journal[0]), journal[1]) if journal and journal[1] else None
        if self._link.cluster:
            answers = self._store_cluster(items, index, journal)
        else:
            answers = self._store_single(items, index, journal)
        self._indexed.update(index)
        failed = next((r for r in answers if isinstance(r, StoreUnavailable)), None)
        if failed is not None and not partial:
            raise failed
        return [r if isinstance(r, StoreUnavailable) else None if r[0] == 2 else FENCED if r[0] == 3
                else (r[1], r[2], r[0] == 1) for r in answers]

    def _store_single(self, items: list[StoreItem], index: list, journal) -> list:
        sha, layout = self._store.sha, self.layout

        def fill(pipe):
            if journal:
                _journal(pipe, *journal)
            for user, conv in index:
                pipe.sadd(keys.user_convs(user), conv)
            names = [key for it in items for key in layout.store_keys(it.conv, it.sender, it.cid)]
            pipe.evalsha(sha, len(names), *names, self.dedup_ttl, _items_blob(items))
            if self.replicas:
                pipe.wait(self.replicas, self.wait_ms)
        results = self._link.pipeline(fill, (self._store,))
        if self.replicas:
            _check_acked(results.pop(), self.replicas, self.wait_ms)
        return msgpack.unpackb(results[-1], raw=False)

    def _store_cluster(self, items: list[StoreItem], index: list, journal) -> list:
        """The journal and the new conversation-list entries first (their keys live on
        other masters): when that fails, only the messages that needed an entry are not
        stored (the journal is best effort: it only saves re-deliveries)."""
        answers: list = [None] * len(items)
        if index or journal:
            def fill(pipe):
                if journal:
                    _journal(pipe, *journal)
                for user, conv in index:
                    pipe.sadd(keys.user_convs(user), conv)
            try:
                self._link.pipeline(fill)
            except StoreUnavailable as exc:
                needing = {conv for _, conv in index}
                for i, it in enumerate(items):
                    if it.conv in needing:
                        answers[i] = exc
                index.clear()
        by_slot: dict = {}
        for i, it in enumerate(items):
            if answers[i] is None:
                by_slot.setdefault(self.layout.slot(it.conv), []).append(i)
        groups = list(by_slot.values())
        calls = [([key for i in group for key in self.layout.store_keys(items[i].conv, items[i].sender, items[i].cid)],
                  [self.dedup_ttl, _items_blob([items[i] for i in group])]) for group in groups]
        raw = self._link.eval_per_master(self._store, calls, self.replicas, self.wait_ms) if calls else []
        for group, blob in zip(groups, raw):
            got = [blob] * len(group) if isinstance(blob, StoreUnavailable) else msgpack.unpackb(blob, raw=False)
            for i, answer in zip(group, got):
                answers[i] = answer
        return answers

    def _to_index(self, items: list[StoreItem]) -> list[tuple[str, str]]:
        wanted = {(user, it.conv) for it in items if it.index for user in it.index.split()}
        return sorted(self._indexed.missing(wanted)) if wanted else []

    def dedup_hits(self, triples) -> dict:
        """{(conv, sender, cid): (seq, ts)} for the triples already acked."""
        triples = list(triples)
        if not triples:
            return {}

        def run(r):
            pipe = r.pipeline(transaction=False)
            for conv, sender, cid in triples:
                pipe.get(self.layout.dedup(conv, sender, cid))
            return pipe.execute()
        hits = {}
        for t, raw in zip(triples, self._link.run(run)):
            if raw:
                seq, ts = raw.decode().split(":")
                hits[t] = (int(seq), int(ts))
        if hits and self.replicas:
            # the first store's WAIT may have failed: this ack waits for replicas too
            self._link.touch_per_master([self.layout.dedup(*t) for t in hits], self.dedup_ttl,
                                        self.replicas, self.wait_ms)
        return hits

    def last_seqs(self, convs) -> dict:
        convs = list(convs)
        if not convs:
            return {}
        raw = self._link.mget([self.layout.seq(c) for c in convs])
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
                pipe.get(self.layout.seq(conv))
                if bounded[conv].age_ms > 0:
                    pipe.lindex(self.layout.checkpoints(conv), 0)
                    pipe.exists(self.layout.messages(conv))
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
                pipe.get(self.layout.seq(conv))
                if limit > 0:
                    pipe.hmget(self.layout.messages(conv), list(range(after + 1, after + 1 + limit)))
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
                pipe.hget(self.layout.messages(conv), seq)
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
        if self._link.cluster:
            return self._move_cursors_cluster(triples)
        names = [keys.cursors(user) for user, _, _ in triples] + [self.layout.seq(c) for _, c, _ in triples]
        return int(self._link.eval(self._cursor, names, _cursor_args(triples, clamp=True)))

    def _move_cursors_cluster(self, triples) -> int:
        """The seq keys live in other slots than the cursors: clamp to the last seqs read
        first (seqs only grow), then one script call per user, pipelined."""
        last = self.last_seqs({conv for _, conv, _ in triples})
        by_user: dict = {}
        for user, conv, seq in triples:
            by_user.setdefault(user, []).append((user, conv, min(int(seq), last[conv])))
        sha = self._cursor.sha

        def fill(pipe):
            for user, moves in by_user.items():
                names = [keys.cursors(user)] * len(moves)
                pipe.evalsha(sha, len(names), *names, *_cursor_args(moves, clamp=False))
        return sum(int(n) for n in self._link.pipeline(fill, (self._cursor,)))

    def welcome_state(self, user: str, replay_max: int, extra_convs=("sys",), floors=None, bounds=None):
        """What ``welcome`` needs: ({conv: last_seq}, [(conv, seq, record), ...], {conv:
        the user's delivered cursor} of every DM and group of the user).

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
        read = {c: cursors.get(c, 0) for c in convs}
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
        return last, replay, read

    # -- the zones' journals (zone/recent.py) -----------------------------------------
    def journal(self, zone: str) -> list[bytes]:
        """Every entry of ``zone``'s journal, oldest first."""
        return self._link.run(Redis.lrange, keys.journal(zone), 0, -1)

    def note_journal(self, zone: str, entries: list[bytes]) -> None:
        """Append to ``zone``'s journal outside a store (what ``store_batch`` does first)."""
        self._link.pipeline(lambda pipe: _journal(pipe, keys.journal(zone), entries))

    # -- the slot table (center owns it) ----------------------------------------------
    def load_table(self):
        """(version, owners, epochs) of center's slot table, None before the first handover."""
        raw = self._link.run(Redis.hgetall, keys.SLOT_TABLE)
        if not raw or b"version" not in raw:
            return None
        return (int(raw[b"version"]), msgpack.unpackb(raw[b"owners"], raw=False),
                msgpack.unpackb(raw[b"epochs"], raw=False))

    def save_table(self, version: int, owners: list, epochs: list) -> None:
        self._link.run(Redis.hset, keys.SLOT_TABLE, None, None,
                       {"version": version, "owners": msgpack.packb(owners), "epochs": msgpack.packb(epochs)})

    def epochs(self, slots: int) -> list[int]:
        """Every slot's fence as Redis holds it (0 where never moved)."""
        got = self._link.mget([keys.Layout.epoch(s) for s in range(slots)])
        return [int(e or 0) for e in got]

    def bump_epochs(self, slots: list[int]) -> dict:
        """{slot: its new epoch}: each slot's fence moves on (INCR ep:{s<slot>}), on
        ``replicas`` replicas before it counts (WAIT), so a failover cannot roll it back."""
        if not slots:
            return {}
        names = [keys.Layout.epoch(s) for s in slots]
        got = self._link.incr_all(names, self.replicas, self.wait_ms)
        return {s: int(got[name]) for s, name in zip(slots, names)}

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


def _summed_memory(infos: list[dict]) -> dict:
    out = {k: sum(int(i.get(k, 0)) for i in infos)
           for k in MEMORY_FIELDS if not k.endswith(("_human", "_ratio"))}
    out["mem_fragmentation_ratio"] = max(float(i.get("mem_fragmentation_ratio", 0)) for i in infos)
    out["masters"] = len(infos)
    return out


def _journal(pipe, key: str, entries: list[bytes]) -> None:
    pipe.rpush(key, *entries)
    pipe.ltrim(key, -keys.JOURNAL_MAX, -1)


def _cursor_args(triples, clamp: bool) -> list:
    args = [len(triples), 1 if clamp else 0]
    for _, conv, seq in triples:
        args += (conv, int(seq))
    return args


def _items_blob(items: list[StoreItem]) -> bytes:
    # the old raw type for bytes: Redis' Lua cmsgpack predates msgpack's bin types
    return msgpack.packb([(it.ts, it.prefix, it.cap, it.deadline, it.age, retention.bucket_ms(it.age), it.epoch,
                           it.ref, it.replaced) for it in items], use_bin_type=False)


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


class Fenced(StoreUnavailable):
    """The group's slot has another owner now (its fence is past this zone's epoch)."""


UNFENCED = 2 ** 52       # the epoch of a writer that is no zone (tools, tests): passes any fence


class GroupStore:
    """Group membership in Redis; the zone owning the group is its only writer, and its
    writes to the group's slot are fenced like its stores (``epoch_of(conv)``: the zone's
    epoch of the slot; a stale zone's change raises ``Fenced`` and writes nothing)."""

    def __init__(self, store: Store, epoch_of=None):
        self._link = store.link
        self._keys = store.layout
        self._epoch_of = epoch_of or (lambda conv: UNFENCED)
        self._script = None          # registered on first use

    def _fenced(self, conv: str, commands: list) -> list:
        """Run ``commands`` ((name, key, *args), keys of ``conv``'s slot) in one script call
        after checking the slot's fence; their answers."""
        names = [keys.Layout.epoch(self._keys.slot(conv))]
        wire = []
        for name, key, *args in commands:
            assert name in keys.GROUP_COMMANDS, name
            if key not in names:
                names.append(key)
            wire.append([name, names.index(key) + 1, *args])
        blob = msgpack.packb(wire, use_bin_type=False)
        if self._script is None:
            self._script = self._link.script(keys.GROUP_SCRIPT)
        answer = msgpack.unpackb(self._link.eval(self._script, names, [self._epoch_of(conv), blob]), raw=False)
        if not answer[0]:
            raise Fenced(f"{conv} moved to another zone; retry")
        return answer[1]

    def load(self, conv: str):
        """(owner, [members in join order]) or None when the group does not exist."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            pipe.hget(self._keys.group_info(conv), "owner")
            pipe.zrange(self._keys.group_members(conv), 0, -1)
            return pipe.execute()
        owner, members = self._link.run(run)
        if owner is None:
            return None
        return owner.decode(), [m.decode() for m in members]

    def create(self, conv: str, owner: str, members: list[str]) -> None:
        info, roster = self._keys.group_info(conv), self._keys.group_members(conv)
        scored = [x for i, m in enumerate(members) for x in (i, m)]
        got = self._fenced(conv, [("HSET", info, "owner", owner, "n", len(members)),
                                  ("ZADD", roster, *scored), ("GET", self._keys.seq(conv))])
        self._index(conv, members, int(got[2] or 0))

    def add(self, conv: str, user: str) -> None:
        info, roster = self._keys.group_info(conv), self._keys.group_members(conv)
        order, last = self._fenced(conv, [("HINCRBY", info, "n", 1), ("GET", self._keys.seq(conv))])
        self._fenced(conv, [("ZADD", roster, "NX", int(order), user)])
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
        self._fenced(conv, [("HSET", self._keys.group_info(conv), "owner", owner)])

    def remove(self, conv: str, user: str, new_owner: str | None, empty: bool) -> None:
        """The user's list first: a failure between leaves a member whose list misses the
        group (sync still works), never a non-member replayed its messages (the user's
        keys and the group's live in different slots: no one atomic call)."""
        def run(r):
            pipe = r.pipeline(transaction=False)
            pipe.srem(keys.user_convs(user), conv)
            pipe.hdel(keys.cursors(user), conv)
            return pipe.execute()
        self._link.run(run)
        info, roster = self._keys.group_info(conv), self._keys.group_members(conv)
        commands = [("ZREM", roster, user)]
        if empty:
            commands += [("DEL", info), ("DEL", roster)]
        elif new_owner:
            commands.append(("HSET", info, "owner", new_owner))
        self._fenced(conv, commands)


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
