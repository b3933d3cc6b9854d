"""The dc role: delivered cursors and the logout barrier.

``recv`` moves a user's cursor; ``logout`` must answer only after every earlier ``recv``
of the session is stored. Both arrive on one ZeroMQ pipe from the gate, in order, and the
``cursor_worker`` handles them in that order: all queued cursor moves go to Redis in one
script call, then the logouts queued after them are answered.
"""
from __future__ import annotations

import gevent
from gevent.event import Event

from cluster import convs
from cluster.envelopes import Block, Logout, Mod, Recv
from cluster.metrics import redis_answers
from cluster.node import Node
from cluster.replies import OK, error, unavailable
from cluster.stats import bus_counters, report_loop
from dc.store import ModerationStore, Store, StoreUnavailable

MAX_QUEUE = 100000


class DcNode(Node):
    role = "dc"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.store = Store.from_config(config, max_connections=8)
        self.mod = ModerationStore(self.store)
        self.zones = [n.name for n in config.nodes_of("zone")]
        self.queue: list = []
        self.wake = Event()
        self.dropped = 0
        self.redis_errors = 0

    def setup(self) -> str:
        addr = self.bus.bind()
        self.bus.on(Recv, self.on_recv)
        self.bus.on(Logout, self.on_logout)
        self.bus.on(Block, self.on_block)
        self.spawn(self.cursor_worker)
        self.spawn(report_loop, self, self.ops_counters, name="stats_reporter")
        return addr

    def ops_counters(self) -> dict:
        """dc's report to center's operator view: Redis memory (INFO memory) and its queue."""
        try:
            redis = self.store.memory()
        except StoreUnavailable as exc:
            redis = {"error": str(exc)}
        return {"redis": redis, "queue": len(self.queue), "dropped": self.dropped,
                **bus_counters(self.bus)}

    def metrics(self, fam) -> None:
        fam.gauge("queue", "cursor and logout writes waiting for Redis", len(self.queue))
        fam.counter("dropped", "cursor writes dropped past the queue bound (pushed again at login)",
                    self.dropped)
        fam.counter("redis_errors", "Redis calls that failed", self.redis_errors)
        super().metrics(fam)

    def ready_checks(self) -> dict:
        return {"redis": redis_answers(self.store)}

    def shutdown(self) -> None:
        self.store.close()

    def on_recv(self, env: Recv) -> None:
        user, conv, seq = env
        if conv.startswith("d:") and user not in convs.dm_users(conv):
            return
        if len(self.queue) >= MAX_QUEUE:
            self.dropped += 1     # at-least-once: the message is pushed again next login
            return
        self.queue.append(("recv", user, conv, seq))
        self.wake.set()

    def on_logout(self, env: Logout) -> None:
        self.queue.append(("logout", env))
        self.wake.set()

    def cursor_worker(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                self.handle(batch)
                gevent.sleep(0)

    def handle(self, batch) -> None:
        moves = [item[1:] for item in batch if item[0] == "recv"]
        logouts = [item[1] for item in batch if item[0] == "logout"]
        try:
            self.store.move_cursors(moves)
            ok = True
        except StoreUnavailable as exc:
            self.log.warning("cursor moves lost (pushed again at next login): %s", exc)
            self.redis_errors += 1
            ok = False
        body = OK if ok else unavailable("could not store your read position; retry")
        for logout in logouts:
            self.answer(logout.gate, logout.req, body)

    def on_block(self, env: Block) -> None:
        """Blocks change rarely: written at once, then announced to every zone."""
        try:
            if not self.store.existing_users([env.other]):
                body = error("no_such_user", f"no user named {env.other}")
            else:
                self.mod.set_block(env.user, env.other, bool(env.on))
                body = OK
                for zone in self.zones:
                    self.bus.send(zone, Mod("block", env.user, [env.other, bool(env.on)]))
        except StoreUnavailable:
            self.redis_errors += 1
            body = unavailable("storage is unavailable; retry")
        self.answer(env.gate, env.req, body)
