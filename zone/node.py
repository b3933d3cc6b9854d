"""A zone: the single writer of the conversations in its slots.

Requests queue up during a loop tick; the ``tick_worker`` then handles the whole batch:
one pipeline for what it must look up (unknown users, dedup keys of over-rate sends),
one ``STORE_SCRIPT`` call for every message to store, then acks to the gates and one
``dlv`` per stored message to center. Checks run in the contract's order: bad_conv,
not_member, too_large, muted, resend of an acked cid, rate.
"""
from __future__ import annotations

import time

import gevent
from gevent.event import Event

from cluster import convs
from cluster.codec import msg_prefix, msg_record, pack_map_with_raw, packb
from cluster.node import Node
from cluster.slots import SlotTable
from dc.store import Store, StoreItem, StoreUnavailable
from zone.checks import Refused, SendReq, SyncReq

MAX_BATCH = 2000


class ZoneNode(Node):
    role = "zone"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.chat = config.chat
        self.table = SlotTable.initial([n.name for n in config.nodes_of("zone")], config.chat.slots)
        self.store = Store.from_config(config, max_connections=8)
        self.center = config.nodes_of("center")[0].name
        self.queue: list = []
        self.wake = Event()
        self.known_users: set = set()

    def setup(self) -> str:
        addr = self.bus.bind()
        self.bus.on("send", lambda env: self.enqueue(SendReq(*env[1:10])))
        self.bus.on("sync", lambda env: self.enqueue(SyncReq(*env[1:8])))
        self.spawn(self.tick_worker)
        return addr

    def shutdown(self) -> None:
        self.store.close()

    def enqueue(self, req) -> None:
        self.queue.append(req)
        self.wake.set()

    def tick_worker(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                self.handle_batch(batch)
                gevent.sleep(0)

    def handle_batch(self, batch) -> None:
        sends = [r for r in batch if isinstance(r, SendReq)]
        syncs = [r for r in batch if isinstance(r, SyncReq)]
        try:
            if sends:
                self.handle_sends(sends)
            if syncs:
                self.handle_syncs(syncs)
        except StoreUnavailable as exc:
            self.log.warning("store unavailable: %s", exc)
            for r in batch:
                self.error(r, "unavailable", "storage is unavailable; resend the same cid later",
                           retry_ms=1000)

    # -- replies --------------------------------------------------------------------------
    def reply(self, r, body: dict) -> None:
        if r.rid is not None:
            body["rid"] = r.rid
        self.bus.send(r.gate, "rep", r.req, packb(body))

    def error(self, r, code: str, reason: str, **extra) -> None:
        self.reply(r, {"t": "error", "code": code, "reason": reason, **extra})

    def ack(self, r, seq: int, ts: int) -> None:
        self.reply(r, {"t": "ack", "conv": r.conv, "cid": r.cid, "seq": seq, "ts": ts})

    # -- membership -----------------------------------------------------------------------
    def learn_users(self, reqs) -> None:
        wanted = set()
        for r in reqs:
            if r.conv.startswith("d:"):
                wanted.update(convs.dm_users(r.conv))
        unknown = wanted - self.known_users
        if unknown:
            self.known_users |= self.store.existing_users(unknown)

    def check_member(self, r) -> None:
        """bad_conv, then not_member, for what the zone owns."""
        if self.table.zone_of(r.conv) != self.name:
            raise Refused("unavailable", "conversation moved; retry")
        kind = convs.kind(r.conv)
        if kind == "d":
            for u in convs.dm_users(r.conv):
                if u not in self.known_users:
                    raise Refused("bad_conv", f"no user named {u}")
            if r.user not in convs.dm_users(r.conv):
                raise Refused("not_member", f"you are not in {r.conv}")
        elif kind == "g":
            raise Refused("not_member", f"you are not a member of {r.conv}")

    # -- sends ----------------------------------------------------------------------------
    def handle_sends(self, sends) -> None:
        now_ms = int(time.time() * 1000)
        sends = [r for r in sends if r.deadline >= now_ms]   # the gate answers the rest
        self.learn_users(sends)
        over = [(r.conv, r.user, r.cid) for r in sends if r.over_rate]
        acked = self.store.dedup_hits(over) if over else {}
        to_store = []
        for r in sends:
            try:
                self.check_send(r, acked)
            except Refused as exc:
                self.error(r, exc.code, exc.reason)
                continue
            if (r.conv, r.user, r.cid) in acked:
                self.ack(r, *acked[(r.conv, r.user, r.cid)])
                continue
            to_store.append(r)
        self.store_sends(to_store, now_ms)

    def check_send(self, r, acked) -> None:
        self.check_member(r)
        if len(r.body) > self.chat.body_max:
            raise Refused("too_large", f"body is {len(r.body)} bytes encoded; the limit is {self.chat.body_max}")
        if r.over_rate and (r.conv, r.user, r.cid) not in acked:
            raise Refused("rate_limited", "too many messages; slow down")

    def store_sends(self, reqs, now_ms: int) -> None:
        if not reqs:
            return
        items = []
        for r in reqs:
            r.prefix = msg_prefix(r.conv, r.user, now_ms, r.cid, r.body)
            items.append(StoreItem(r.conv, r.user, r.cid, now_ms, r.prefix, index=self.index_of(r)))
        for r, (seq, ts, dup) in zip(reqs, self.store.store_batch(items)):
            self.ack(r, seq, ts)
            if not dup:
                self.deliver(r, seq, ts)

    def index_of(self, r) -> str:
        return " ".join(convs.dm_users(r.conv)) if r.conv.startswith("d:") else ""

    def deliver(self, r, seq: int, ts: int) -> None:
        self.bus.record("store", r.conv, seq, r.user, r.cid, ts)
        recipients = [u for u in convs.dm_users(r.conv) if u != r.user]
        if recipients:
            self.bus.send(self.center, "dlv", recipients, r.conv, seq, msg_record(r.prefix, seq))

    # -- sync -----------------------------------------------------------------------------
    def handle_syncs(self, syncs) -> None:
        self.learn_users(syncs)
        ok = []
        for r in syncs:
            try:
                if r.conv != convs.SYS:
                    self.check_member(r)
            except Refused as exc:
                self.error(r, exc.code, exc.reason)
                continue
            ok.append(r)
        results = self.store.history_many([(r.conv, r.after, r.limit) for r in ok])
        for r, (records, last) in zip(ok, results):
            head = {"t": "history", "conv": r.conv, "last_seq": last}
            if r.rid is not None:
                head["rid"] = r.rid
            self.bus.send(r.gate, "rep", r.req, pack_map_with_raw(head, "msgs", records))
