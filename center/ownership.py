"""Center's slot table: who owns which slot, zone heartbeats, and handing slots over.

Zones beat every ``cluster.zone_heartbeat`` (``Beat``: the table version they hold; an
older one is answered with the current ``Table``). A zone silent for longer than
``cluster.zone_timeout`` is dead: its slots are dealt over the live zones; when it
beats again it gets them back (``cluster.slots.balanced``, a function of which zones are
alive). A handover first moves each moved slot's epoch on in Redis (``INCR ep:{s<n>}``),
so the old owner's stores are refused by the store script from that instant (it may be
paused, or cut off, and not know yet), then saves the new version in Redis (a restarted
center, and a restarting zone, start from it) and sends it to every gate and zone.

While Redis is unavailable nothing is handed over (the epochs could not move): it is
tried again at the next check. A center that starts hands nothing over for a whole
``zone_timeout`` (the zones' beats arrive meanwhile); a zone counts as alive only once it
has beaten. It also starts from the fences Redis holds where they are higher than the
saved table's (a table lost or behind would fence every zone out), and it sends the
table to every gate again every ``REPUBLISH`` seconds (one lost ``table`` envelope must
not leave a gate routing by an old one).
"""
from __future__ import annotations

import time

import gevent

from cluster import slots
from cluster.envelopes import Beat, Table
from dc.store import StoreUnavailable

CHECK_MAX = 1.0       # seconds between two looks for silent zones, at most (zone_timeout / 4)
REPUBLISH = 10.0      # seconds between two sends of a handed-over table to every gate


class Ownership:
    def __init__(self, center):
        self.center = center
        cfg = center.config
        self.zones = [n.name for n in cfg.nodes_of("zone")]
        self.gates = [n.name for n in cfg.nodes_of("gate")]
        self.timeout = cfg.cluster.zone_timeout
        self.check_every = min(CHECK_MAX, self.timeout / 4)    # an idle center wakes once a second
        self.slots = cfg.chat.slots
        self.table = slots.from_saved(center.store.load_table(), self.zones, self.slots)
        self.started = time.monotonic()
        self.heard: dict = {}           # zone -> when it last beat (since this center started)
        self.handovers = 0
        self._published = self.started
        self._catching_up = False
        self.reconcile()

    def reconcile(self) -> None:
        """Carry Redis's fences where they are higher than the table's (see above)."""
        table = slots.reconciled(self.table, self.center.store.epochs(self.slots))
        if table is not None:
            self.center.store.save_table(*table.to_wire())
            self.table = table
            self.center.log.warning("slot table %d: fences taken from Redis", table.version)

    def start(self) -> None:
        self.center.bus.on(Beat, self.on_beat)
        self.center.spawn(self.watch)

    def on_beat(self, env: Beat) -> None:
        if env.zone not in self.zones:
            return
        self.heard[env.zone] = time.monotonic()
        if env.version > self.table.version and not self._catching_up:
            self._catching_up = True        # handlers run in the loop: Redis waits in a greenlet
            self.center.spawn(self.outnumbered, env.version)
        if env.version < self.table.version:
            self.center.bus.send(env.zone, Table(*self.table.to_wire()))

    def outnumbered(self, seen: int) -> None:
        """A zone holds a newer version than ours (Redis lost ``zc:slots``): ours goes past
        it, so every node takes center's table again."""
        table = slots.SlotTable(self.table.owners, seen + 1, self.table.epochs)
        try:
            self.center.store.save_table(*table.to_wire())
        except StoreUnavailable as exc:
            self.center.log.warning("slot table not saved: %s", exc)
            return
        finally:
            self._catching_up = False
        self.table = table
        self.center.log.warning("slot table %d: past the version %d a zone held", table.version, seen)
        self.publish()

    def alive(self) -> set:
        now = time.monotonic()
        return {zone for zone, at in self.heard.items() if now - at <= self.timeout}

    def watch(self) -> None:
        while True:
            gevent.sleep(self.check_every)
            try:
                self.check()
            except StoreUnavailable as exc:
                self.center.log.warning("slot handover postponed: %s", exc)

    def check(self) -> None:
        now = time.monotonic()
        if now - self.started < self.timeout:
            return                      # the zones' first beats are still on their way
        if self.table.version > 1 and now - self._published >= REPUBLISH:
            self._published = now
            self.publish(self.gates)
        owners = slots.balanced(self.zones, self.alive(), self.slots)
        if owners is None or owners == self.table.owners:
            return
        moved = self.table.moved_to(owners)
        epochs = self.center.store.bump_epochs(moved)       # the fence first
        table = self.table.handed_over(owners, epochs)
        self.center.store.save_table(*table.to_wire())
        self.table, self.handovers = table, self.handovers + 1
        self.center.log.warning("slot table %d: %d slots handed over; alive %s; now %s", table.version,
                                len(moved), sorted(self.alive()), table.counts())
        self.center.bus.record("admin", "slots", {"version": table.version, "moved": len(moved),
                                                  "owners": table.counts()})
        self.publish()

    def publish(self, to=None) -> None:
        envelope = Table(*self.table.to_wire())
        for node in to or self.gates + self.zones:
            self.center.bus.send(node, envelope)

    def snapshot(self) -> dict:
        return {"version": self.table.version, "owners": self.table.counts(),
                "alive": sorted(self.alive()), "handovers": self.handovers}
