"""A group's live pushes: read receipts and typing, to the other members. Never stored.

The gate cannot name a group's members; the zone that owns the group can (its cache,
zone/groups.py). ``read`` and ``typing`` envelopes wait in one bounded queue (``QUEUE_MAX``;
past it they are dropped and counted: a lost "is typing" or read tick is repaired by the
next one) and a worker turns each into one ``notify`` for center, which routes it to the
members' gates. Reads of a run are coalesced to one per (user, conv); groups above
``chat.receipts_max_members`` get no read pushes.
"""
from __future__ import annotations

from gevent.event import Event

from cluster.codec import packb
from cluster.envelopes import Notify, Read
from dc.store import StoreUnavailable

QUEUE_MAX = 10000


class LiveWork:
    def __init__(self, zone):
        self.zone = zone
        self.queue: list = []
        self.wake = Event()
        self.dropped = 0

    def enqueue(self, env) -> None:
        if len(self.queue) >= QUEUE_MAX:
            self.dropped += 1
            return
        self.queue.append(env)
        self.wake.set()

    def worker(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            run, self.queue = self.queue, []
            try:
                self.handle(run)
            except StoreUnavailable as exc:
                self.zone.log.warning("live pushes dropped, store unavailable: %s", exc)
                self.dropped += len(run)

    def handle(self, run: list) -> None:
        reads: dict = {}
        for env in run:
            if type(env) is Read:
                key = (env.user, env.conv)
                reads[key] = max(env.seq, reads.get(key, 0))
            else:
                self.notify(env.user, env.conv, {"t": "typing", "conv": env.conv, "user": env.user})
        most = self.zone.chat.receipts_max_members
        for (user, conv), seq in reads.items():
            self.notify(user, conv, {"t": "read", "conv": conv, "user": user, "seq": seq}, most)

    def notify(self, user: str, conv: str, body: dict, most: int | None = None) -> None:
        zone = self.zone
        if zone.table.zone_of(conv) != zone.name:
            return
        group = zone.groups.peek(conv)          # never loads into the tick worker's cache
        if group is None or user not in group.members:
            return
        if most is not None and len(group.members) > most:
            return
        others = [m for m in group.members if m != user]
        if others:
            zone.bus.send(zone.center, Notify(others, packb(body), user))
