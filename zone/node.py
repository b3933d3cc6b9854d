"""A zone: the single writer of the conversations in its slots.

Requests queue up during a loop tick; the ``tick_worker`` then handles them in arrival
order, in runs: a run of sends costs one pipeline for what must be looked up (unknown
users, dedup keys of over-rate sends) and one ``STORE_SCRIPT`` call; a run of syncs one
pipeline; group changes and joins one at a time, in order with the sends around them
(a run of group changes looks up all the names it needs in one pipeline, and a tick does
at most ``zone.group_work`` of them: zone/groups.py ``GroupWork``).
Checks run in the contract's order: bad_conv, not_member, too_large, muted, resend of an
acked cid, rate.
"""
from __future__ import annotations

import collections
import itertools
import time

import gevent
from gevent.event import Event

from cluster import config as config_mod
from cluster import convs, envelopes
from cluster.codec import msg_record, pack_map_with_raw, packb
from cluster.envelopes import Beat, Dlv, Focus, Group, Join, Mod, Post, Rdlv, Read, Rep, Send, Sent, Sync, Table, Typing
from cluster.lru import LruSet
from cluster.metrics import STORE_BOUNDS, Buckets
from cluster.node import Node
from cluster.replies import OK, Refused
from cluster import slots
from cluster.stats import bus_counters, report_loop
from dc import retention
from dc.store import FENCED, Store, StoreItem, StoreUnavailable
from zone import metrics as zone_metrics
from zone.groups import Groups, GroupWork, named_users
from zone.moderation import Moderation, WordFilter
from zone import events, recent
from zone.live import LiveWork
from zone.requests import PostReq, SendReq

MAX_BATCH = 2000
TICK_FULL = 8            # requests in a tick that earn the next tick the whole tick_window
REDELIVER_WINDOW_MS = 15000   # a resend within this of the original may follow a crash


class ZoneNode(Node):
    role = "zone"
    inline_inbox = True

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.chat = config.chat
        self.retention = retention.all_bounds(config.chat)     # {kind: Bounds} (dc/retention.py)
        self.store = Store.from_config(config, max_connections=8)
        zones = [n.name for n in config.nodes_of("zone")]
        self.table = slots.from_saved(self.store.load_table(), zones, config.chat.slots)
        self.fenced = 0                 # stores refused by a slot's epoch (this zone lost it)
        caches = config.zone
        self.groups = Groups(self.store, config.chat.group_max_members, caches.group_cache,
                             epoch_of=lambda conv: self.table.epoch_of(conv))   # fenced like stores
        self.group_work = GroupWork(caches.group_work, caches.group_queue)   # per-tick bound
        self.mod = Moderation(self.store, caches.block_cache, caches.dup_memory)
        self.words = WordFilter(config.moderation.word_filter, config.moderation.filter_action)
        self.center = config.nodes_of("center")[0].name
        self.dlv_peers = self.delivery_peers(config)
        self.recovery = recent.Recovery(self)   # what a new writer of a slot delivers again
        self.live = LiveWork(self)      # groups' read receipts and typing (zone/live.py)
        self.queue: list = []
        self.wake = Event()
        self.known_users = LruSet(caches.user_cache)   # names known to exist: see learn_users
        self._last_tick = 0.0
        self.stored = collections.Counter()     # messages stored (resends excluded), by conv prefix
        self.store_seconds = Buckets(STORE_BOUNDS)  # one store call of a tick (zone/metrics.py)
        self.redis_errors = 0           # store calls that failed (StoreUnavailable)
        self.errors = collections.Counter()     # error replies by code

    def setup(self) -> str:
        addr = self.bus.bind()
        self.bus.on(Send, lambda env: self.enqueue(SendReq(*env)))
        self.bus.on(Post, lambda env: self.enqueue(PostReq(*env)))
        for cls in (Sync, Join, Group):         # read as they came
            self.bus.on(cls, self.enqueue)
        self.bus.on(Mod, self.on_mod)
        self.bus.on(Read, self.live.enqueue)
        self.bus.on(Typing, self.live.enqueue)
        self.bus.on(Focus, lambda env: self.enqueue(Sync(*env)))    # a passive viewer's backfill
        self.bus.on(Table, self.on_table)
        self.spawn(self.tick_worker)
        self.spawn(self.beat_loop)
        self.spawn(self.live.worker)
        self.spawn(report_loop, self, self.ops_counters, name="stats_reporter")
        return addr

    def ops_counters(self) -> dict:
        """This zone's report to center's operator view (``cluster/stats.py``)."""
        return {"slots": len(self.table.slots_of(self.name)), "table": self.table.version,
                "fenced": self.fenced, "stored": sum(self.stored.values()), "live_dropped": self.live.dropped,
                "errors": dict(self.errors), "queue": len(self.queue), **bus_counters(self.bus)}

    def metrics(self, fam) -> None:
        zone_metrics.metrics(self, fam)

    def ready_checks(self) -> dict:
        return zone_metrics.ready_checks(self)

    @staticmethod
    def delivery_peers(config) -> list:
        """Where DM and group deliveries go: every gate when there are few (one hop, no
        presence needed: each gate keeps its own users'), else center, which sends each
        gate only the recipients it holds."""
        gates = [n.name for n in config.nodes_of("gate")]
        if len(gates) <= config.bus.direct_dlv_gates:
            return gates
        return [config.nodes_of("center")[0].name]

    def shutdown(self) -> None:
        self.store.close()

    # -- slot ownership ---------------------------------------------------------------
    def beat_loop(self) -> None:
        """Tell center this zone lives, and which table it holds (center answers an old one)."""
        while True:
            self.beat()
            gevent.sleep(self.config.cluster.zone_heartbeat)

    def beat(self) -> None:
        self.bus.send(self.center, Beat(self.name, self.table.version))

    def on_table(self, env: Table) -> None:
        table = slots.newer(self.table, *env)
        if table is None:
            return
        old, self.table = self.table, table
        self.log.info("slot table %d: %d slots here (had %d)", table.version, len(table.slots_of(self.name)),
                      len(old.slots_of(self.name)))
        moved = set(old.moved_to(table.owners))
        self.groups.forget(lambda conv: table.slot(conv) in moved)    # the other owner changed them
        self.recovery.on_table(old, table)

    def on_mod(self, env: Mod) -> None:
        if env.what == "reload":
            self.reload_filter()
        else:
            self.mod.on_change(env)

    def reload_filter(self) -> None:
        try:
            conf = config_mod.load(self.config.path).moderation
        except config_mod.ConfigError as exc:
            self.log.error("word filter not reloaded: %s", exc)
            return
        self.words = WordFilter(conf.word_filter, conf.filter_action)
        self.log.info("word filter reloaded: %d patterns, %s", len(conf.word_filter), conf.filter_action)

    def enqueue(self, req) -> None:
        self.queue.append(req)
        self.wake.set()

    def tick_worker(self) -> None:
        """One batch per tick. The pause between ticks follows the load: after a tick of
        n requests the next waits n/TICK_FULL of ``bus.tick_window`` (all of it from
        TICK_FULL up), so a lone request is stored at once and under load the batches
        (and the single store call each makes) grow instead of the tick count.
        Group changes past the tick's ``zone.group_work`` wait for the next tick, first
        in line (``GroupWork``); a tick with such work held is followed by another."""
        self.recovery.at_start()        # before the first tick: these come before anything new
        window = self.config.bus.tick_window
        last = 0
        while True:
            self.wake.wait()
            self.wake.clear()
            pause = window * min(1.0, last / TICK_FULL)
            gevent.sleep(max(0.0, self._last_tick + pause - time.monotonic()))
            self._last_tick = time.monotonic()
            self.queue = self.group_work.new_tick() + self.queue
            last = len(self.queue)
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                batch, refused = self.group_work.take(batch)
                for r in refused:
                    self.refuse(r, Refused("unavailable", "too many group changes waiting; retry later",
                                           retry_ms=1000))
                for kind, run in itertools.groupby(batch, type):
                    self.handle_run(kind, list(run))
                gevent.sleep(0)
            if self.group_work:
                self.wake.set()

    def handle_run(self, kind, run) -> None:
        try:
            if kind in (SendReq, PostReq):
                self.handle_sends(run)
            elif kind is Sync:
                self.handle_syncs(run)
            elif kind is Join:
                self.handle_joins(run)
            elif kind is Group:         # one lookup pipeline for every name of the run
                self.learn_users([u for r in run for u in named_users(r)])
                for r in run:
                    self.handle_one(r)
            else:
                for r in run:
                    self.handle_one(r)
        except StoreUnavailable as exc:
            self.log.warning("store unavailable: %s", exc)
            self.redis_errors += 1
            for r in run:
                self.refuse(r, Refused("unavailable", "storage is unavailable; retry later", retry_ms=1000))

    # -- replies --------------------------------------------------------------------------
    def reply(self, r, body: bytes, last_seq: int | None = None) -> None:
        if r.gate is not None:
            self.bus.send(r.gate, Rep(r.req, body, last_seq))

    def refuse(self, r, exc: Refused) -> None:
        self.errors[exc.code] += 1
        self.reply(r, exc.body())

    def ack(self, r, seq: int, ts: int) -> None:
        self.reply(r, self.ack_body(r, seq, ts))

    @staticmethod
    def ack_body(r, seq: int, ts: int) -> bytes:
        return packb({"t": "ack", "conv": r.conv, "cid": r.cid, "seq": seq, "ts": ts})

    # -- membership -----------------------------------------------------------------------
    def learn_users(self, names) -> None:
        """Make ``known_users`` hold which of ``names`` exist, one pipeline for the unknown.

        ``known_users`` is an LRU set of ``zone.user_cache`` names: the names asked about
        here are touched (one C-level pass), so the tick that asks keeps them all (the
        bound is at least a tick's and a roster's names); past the bound the least recently
        used name is dropped and looked up in Redis again when next used. Users are never
        deleted, so a cached "exists" stays true. Names that do not exist are not cached.
        """
        known = self.known_users
        unknown = known.missing(names)
        if unknown:
            known.update(self.store.existing_users(unknown))

    def conv_users(self, reqs):
        for r in reqs:
            if r.conv.startswith("d:"):
                yield from convs.dm_users(r.conv)

    def check_member(self, r) -> None:
        """bad_conv, then not_member, for what the zone owns."""
        if self.table.zone_of(r.conv) != self.name:
            raise Refused("unavailable", "conversation moved; retry")
        kind = convs.kind(r.conv)
        if kind == "d":
            pair = convs.dm_users(r.conv)
            for u in pair:
                if u not in self.known_users:
                    raise Refused("bad_conv", f"no user named {u}")
            if r.user not in pair and r.user != "system":
                raise Refused("not_member", f"you are not in {r.conv}")
        elif kind == "g" and r.user != "system" and not self.groups.is_member(r.conv, r.user):
            raise Refused("not_member", f"you are not a member of {r.conv}")

    def blocked(self, r) -> bool:
        """A DM to a user who blocked the sender."""
        if not r.pair or r.user == "system":
            return False
        a, b = r.pair
        return r.user in (a, b) and self.mod.is_blocked(r.user, b if r.user == a else a)

    def recipients(self, r) -> list:
        if r.pair:
            return [u for u in r.pair if u != r.user]
        return [u for u in self.groups.members(r.conv) if u != r.user]

    # -- sends ----------------------------------------------------------------------------
    def handle_sends(self, sends) -> None:
        now_ms = int(time.time() * 1000)
        sends = [r for r in sends if r.deadline >= now_ms]   # the gate answers the rest
        for r in sends:
            if r.conv.startswith("d:"):
                r.pair = convs.dm_users(r.conv)
        users = {u for r in sends for u in r.pair}
        self.learn_users(users)
        self.mod.load_blocks(users & self.known_users)
        over = []
        for r in sends:
            r.blocked = self.blocked(r)
            if r.over_rate or r.blocked or r.kind or self.mod.rooms.get(r.conv):
                over.append((r.conv, r.user, r.cid))
        acked = self.store.dedup_hits(over) if over else {}
        to_store = []
        for r in sends:
            try:
                self.check_send(r, acked, now_ms)
            except Refused as exc:
                self.refuse(r, exc)
                continue
            if (r.conv, r.user, r.cid) in acked:
                self.ack(r, *acked[(r.conv, r.user, r.cid)])
                continue
            to_store.append(r)
        self.store_sends(events.prepare(self, to_store, now_ms), now_ms)

    def check_send(self, r, acked, now_ms: int) -> None:
        self.check_member(r)
        if len(r.body) > self.chat.body_max:
            raise Refused("too_large", f"body is {len(r.body)} bytes encoded; the limit is {self.chat.body_max}")
        self.mod.check_muted(r.user, now_ms)
        if (r.conv, r.user, r.cid) in acked:
            return
        if r.blocked:
            raise Refused("blocked", f"{self.recipients(r)[0]} does not accept your messages")
        if r.over_rate:     # only now: a resend of an acked cid got its ack above
            raise Refused("rate_limited", "too many messages; slow down")
        if r.user != "system":
            r.body = self.words.apply(r.body)
        if r.conv.startswith("r:") and r.user != "system" and not r.kind:   # not edits, recalls
            self.mod.check_room(r.conv, r.user, r.body, now_ms)

    def store_sends(self, reqs, now_ms: int) -> None:
        if not reqs:
            return
        table = self.table           # one table for the owner check and the epochs: a Table
        reqs = [r for r in reqs if self._still_mine(r, table)]   # may have come while it loaded
        if not reqs:
            return
        items = []
        for r in reqs:
            r.prefix = events.prefix(r, now_ms)
            keep = self.bounds_of(r.conv)
            items.append(StoreItem(r.conv, r.user, r.cid, now_ms, r.prefix, index=self.index_of(r),
                                   cap=keep.count, deadline=r.deadline, age=keep.age_ms,
                                   epoch=table.epoch_of(r.conv), ref=r.ref, replaced=r.replaced))
        journal = (self.name, recent.entries(now_ms, [r.conv for r in reqs]))
        began = time.perf_counter()
        results = self.store.store_batch(items, partial=True, journal=journal)
        self.store_seconds.observe(time.perf_counter() - began)
        resent = []
        for r, result in zip(reqs, results):
            if result is None:
                continue            # too late: the gate answered unavailable, nothing stored
            if isinstance(result, StoreUnavailable):    # its Redis master failed; others stored
                self.redis_errors += 1
                self.refuse(r, Refused("unavailable", "storage is unavailable; retry later", retry_ms=1000))
                continue
            if result is FENCED:        # center moved the slot: the new table is on its way
                self.fenced += 1
                self.refuse(r, Refused("unavailable", "conversation moved; retry", retry_ms=200))
                self.beat()
                continue
            seq, ts, dup = result
            if dup:
                self.ack(r, seq, ts)
                resent.append((r, seq, ts))
            else:
                self.stored[r.conv[:1]] += 1
                self.deliver(r, seq, msg_record(r.prefix, seq), acked=ts)
        self.redeliver(resent)

    def _still_mine(self, r, table) -> bool:
        if table.zone_of(r.conv) == self.name:
            return True
        self.refuse(r, Refused("unavailable", "conversation moved; retry", retry_ms=200))
        return False

    def redeliver(self, resent) -> None:
        """A resend soon after the original may follow a crash between store and delivery:
        deliver again (sessions that already have the seq drop it at the gate). Every
        resend's message is logged again: the first store's record is missing when its
        answer never came back (a crash, a WAIT short of replicas); the export keeps one."""
        if not resent:
            return
        recent_ms = int(time.time() * 1000) - REDELIVER_WINDOW_MS
        records = self.store.records([(r.conv, seq) for r, seq, _ in resent])
        for (r, seq, ts), record in zip(resent, records):
            if record is None:
                continue
            if ts >= recent_ms and convs.is_durable(r.conv):
                self.deliver(r, seq, record)
            else:
                self.bus.record("store", r.conv, seq, r.user, r.cid, int(time.time() * 1000), record)

    def index_of(self, r) -> str:
        return " ".join(r.pair)

    def bounds_of(self, conv: str) -> retention.Bounds:
        return self.retention[retention.kind_of(conv)]

    def deliver(self, r, seq: int, record: bytes, log: bool = True, acked: int | None = None) -> None:
        """Send a stored message on; ``acked``: its ts, and the sender's ack goes first. A
        DM or group message whose sender's gate takes deliveries directly travels there
        as one ``sent`` envelope (the ack and the delivery; one encode, one hop)."""
        if log:
            self.bus.record("store", r.conv, seq, r.user, r.cid, int(time.time() * 1000), record)
        users = self.recipients(r) if convs.is_durable(r.conv) else None
        if acked is not None and users and r.gate in self.dlv_peers:
            self.bus.send(r.gate, Sent(r.req, self.ack_body(r, seq, acked), users, r.conv, seq, record))
            self.send_dlv([p for p in self.dlv_peers if p != r.gate], users, r.conv, seq, record)
            return
        if acked is not None:
            self.ack(r, seq, acked)
        if users:
            self.send_dlv(self.dlv_peers, users, r.conv, seq, record)
        elif users is None:
            self.bus.send(self.center, Rdlv(r.conv, seq, record, r.user))

    def send_dlv(self, peers, users, conv: str, seq: int, record: bytes) -> None:
        if peers:
            envelope = envelopes.pack(Dlv(users, conv, seq, record))
            for peer in peers:
                self.bus.send_packed(peer, envelope)

    # -- sync and join --------------------------------------------------------------------
    def handle_syncs(self, syncs) -> None:
        self.learn_users(self.conv_users(syncs))
        ok = []
        for r in syncs:
            try:
                if r.conv != convs.SYS:
                    self.check_member(r)
            except Refused as exc:
                self.refuse(r, exc)
                continue
            ok.append(r)
        kept = self.store.kept_ranges({r.conv: self.bounds_of(r.conv) for r in ok if any(self.bounds_of(r.conv))})
        firsts = {conv: first for conv, (first, _) in kept.items()}
        wanted = [(r.conv, max(r.after, firsts.get(r.conv, 1) - 1), r.limit) for r in ok]
        reads = self.read_positions(ok)
        for r, (records, last) in zip(ok, self.store.history_many(wanted)):
            head = {"t": "history", "conv": r.conv, "last_seq": last}
            if r.after + 1 < firsts.get(r.conv, 1):      # asked for what is no longer kept
                head["first_seq"] = firsts[r.conv]
            if r.conv in reads:
                head["read"] = reads[r.conv]
            self.reply(r, pack_map_with_raw(head, "msgs", records))

    def read_positions(self, syncs) -> dict:
        """{conv: {member: read cursor}} for the DMs and the groups of at most
        chat.receipts_max_members among ``syncs`` (one pipeline)."""
        wanted = {}
        for r in syncs:
            if r.conv.startswith("d:"):
                wanted[r.conv] = convs.dm_users(r.conv)
            elif r.conv.startswith("g:"):
                members = self.groups.members(r.conv)
                if len(members) <= self.chat.receipts_max_members:
                    wanted[r.conv] = members
        items = list(wanted.items())
        return {conv: got for (conv, _), got in zip(items, self.store.read_positions(items))}

    def handle_one(self, r) -> None:
        try:
            self.group_op(r)
        except Refused as exc:
            self.refuse(r, exc)

    def handle_joins(self, joins: list) -> None:
        """A run of joins in two round trips whatever its length (the rooms' last seqs,
        then their recent messages), so a crowd joining at once, or one session's flood
        of joins, does not hold the tick for a round trip per join."""
        last = self.store.last_seqs({r.room for r in joins})
        recent = {room: min(self.chat.join_recent, seq) for room, seq in last.items()}
        pages = self.store.history_many([(room, last[room] - n, n) for room, n in recent.items()])
        pages = dict(zip(recent, pages))
        for r in joins:
            records, top = pages[r.room]
            head = {"t": "joined", "conv": r.room, "last_seq": top, "members": r.members}
            self.reply(r, pack_map_with_raw(head, "recent", records), top)

    def group_op(self, r: Group) -> None:
        if self.table.zone_of(r.group) != self.name:
            raise Refused("unavailable", "conversation moved; retry")
        named = named_users(r)          # looked up for the whole run (handle_run)
        missing = [u for u in named if u not in self.known_users]
        if r.op == "create":
            if self.groups.get(r.group) is not None:
                raise Refused("exists", f"{r.group} already exists")
            if missing:
                raise Refused("no_such_user", f"no user named {missing[0]}")
            self.groups.create(r.group, r.user, named)
        elif r.op == "roster":
            if missing:
                raise Refused("no_such_user", f"no user named {missing[0]}")
            self.learn_users([r.user])
            self.groups.roster(r.group, r.user, named)
        elif r.op == "add":
            self.groups.owned(r.group, r.user)
            if missing:
                raise Refused("no_such_user", f"no user named {missing[0]}")
            self.groups.add(r.group, r.user, r.arg)
        elif r.op == "remove":
            self.groups.owned(r.group, r.user)
            if missing:
                raise Refused("no_such_user", f"no user named {missing[0]}")
            self.groups.remove(r.group, r.user, r.arg)
        else:
            self.groups.leave(r.group, r.user)
        self.reply(r, OK)
