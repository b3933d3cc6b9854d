"""Center: presence (user -> gate, session) and delivery routing, once per gate.

Center's state is soft: on start it says ``hello`` to every gate and the gates answer
with their sessions (``presence``), so a restart of center drops no connection. A ``dlv``
from a zone names its recipients; center groups them by gate and forwards the record
bytes (never decoded) in one ``dlv`` per gate.
"""
from __future__ import annotations

import collections
import itertools
import os

import gevent
from gevent.event import AsyncResult

from cluster.codec import packb, unpackb
from cluster.node import Node
from cluster.slots import SlotTable
from center.admin import AdminApi
from center.ops import Ops
from dc.store import ModerationStore, Store

ADMIN_WAIT = 5.0


class CenterNode(Node):
    role = "center"
    inline_inbox = True

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.presence: dict = {}        # user -> (gate, sid)
        self.rooms: dict = {}           # room -> {gate: local member count}
        self.gates = [n.name for n in config.nodes_of("gate")]
        self.incarnation = os.getpid()
        self.table = SlotTable.initial([n.name for n in config.nodes_of("zone")], config.chat.slots)
        self.stats = collections.Counter()
        self.store = Store.from_config(config, max_connections=8)
        self.moderation = ModerationStore(self.store)
        self.zones = [n.name for n in config.nodes_of("zone")]
        self.login_node = config.nodes_of("login")[0].name
        self.waiting: dict = {}
        self._reqs = itertools.count(1)
        self.ops = Ops(self)            # the operator view: nodes' reports, last admin actions
        self.admin = AdminApi(self)

    def shutdown(self) -> None:
        self.admin.stop()
        self.store.close()

    def setup(self) -> str:
        addr = self.bus.bind()
        for kind, fn in (("bind", self.on_bind), ("unbind", self.on_unbind),
                         ("presence", self.on_presence), ("dlv", self.on_dlv),
                         ("rdlv", self.on_rdlv), ("roomcount", self.on_roomcount),
                         ("join", self.on_join), ("room_info", self.on_room_info),
                         ("rep", self.on_rep), ("resume", self.on_resume),
                         ("stats", self.ops.on_stats)):
            self.bus.on(kind, fn)
        if self.spec.admin_port:
            self.admin.start(self.spec.admin_host, self.spec.admin_port)
        for gate in self.gates:
            self.bus.send(gate, "hello", self.incarnation)
        return addr

    def on_bind(self, env) -> None:
        _, user, gate, sid, login_node, bind_id = env[:6]
        old = self.presence.get(user)
        if old is not None and old != (gate, sid):
            self.bus.send(old[0], "kick", old[1], "session_replaced")
        self.presence[user] = (gate, sid)
        self.bus.send(login_node, "bound", bind_id)

    def on_unbind(self, env) -> None:
        _, user, gate, sid = env[:4]
        if self.presence.get(user) == (gate, sid):
            del self.presence[user]

    def on_resume(self, env) -> None:
        """Passed on to login after the gate's presence (same pipe, so already applied)."""
        self.bus.send_packed(self.login_node, packb(env))

    def on_presence(self, env) -> None:
        """A gate's full list as of its id ``last``: forget its sessions not listed, learn the
        listed ones. A bind with a newer id than the list came from login after the list
        was made (another pipe, so it may arrive first) and stays."""
        _, gate, listed, rooms, base, last, pending = env[:7]
        here = {(user, sid) for user, sid in listed}
        keep = here | {(user, sid) for user, sid in pending}
        for user, where in list(self.presence.items()):
            newer = base <= where[1] and where[1] > last
            if where[0] == gate and (user, where[1]) not in keep and not newer:
                del self.presence[user]
        for user, sid in here:
            self.presence.setdefault(user, (gate, sid))
        for room in list(self.rooms):
            self._set_count(room, gate, rooms.get(room, 0))
        for room, count in rooms.items():
            self._set_count(room, gate, count)

    def on_dlv(self, env) -> None:
        _, users, conv, seq, record = env[:5]
        by_gate: dict = {}
        presence = self.presence
        for user in users:
            where = presence.get(user)
            if where is not None:
                by_gate.setdefault(where[0], []).append(user)
        for gate, local in by_gate.items():
            self.bus.send(gate, "dlv", local, conv, seq, record)
        self.stats["dlv"] += 1

    # -- rooms ----------------------------------------------------------------------------
    def _set_count(self, room: str, gate: str, count: int) -> None:
        gates = self.rooms.setdefault(room, {})
        if count > 0:
            gates[gate] = count
        else:
            gates.pop(gate, None)
            if not gates:
                del self.rooms[room]

    def members(self, room: str) -> int:
        return sum(self.rooms.get(room, {}).values())

    def on_roomcount(self, env) -> None:
        _, gate, room, count = env[:4]
        self._set_count(room, gate, count)

    def on_join(self, env) -> None:
        """Forward a join to the room's zone after the gate is subscribed: no gap."""
        _, gate, req, rid, user, room = env[:6]
        zone = self.table.zone_of(room)
        self.bus.send(zone, "join", gate, req, rid, user, room, self.members(room))

    def on_room_info(self, env) -> None:
        _, gate, req, rid, _user, room = env[:6]
        body = {"t": "room_info", "room": room, "members": self.members(room)}
        if rid is not None:
            body["rid"] = rid
        self.bus.send(gate, "rep", req, packb(body))

    def on_rdlv(self, env) -> None:
        """A room or sys message: once to each gate that needs it."""
        conv = env[1]
        gates = self.gates if conv == "sys" else self.rooms.get(conv, ())
        if gates:
            packed = packb(env)
            for gate in gates:
                self.bus.send_packed(gate, packed)
        self.stats["rdlv"] += 1

    # -- admin ----------------------------------------------------------------------------
    def ask_zone(self, conv: str, kind: str, *fields) -> dict:
        """Send an admin request to the zone of ``conv`` and wait for its answer."""
        req = next(self._reqs)
        result = self.waiting[req] = AsyncResult()
        self.bus.send(self.table.zone_of(conv), kind, self.name, req, *fields)
        try:
            return unpackb(result.get(timeout=ADMIN_WAIT))
        except gevent.Timeout:
            return {"t": "error", "code": "unavailable", "reason": "the zone did not answer"}
        finally:
            self.waiting.pop(req, None)

    def on_rep(self, env) -> None:
        result = self.waiting.get(env[1])
        if result is not None:
            result.set(env[2])

    def post(self, conv: str, cid: str, body_raw: bytes) -> dict:
        return self.ask_zone(conv, "post", conv, cid, body_raw)

    def group_roster(self, group: str, owner: str, members: list) -> dict:
        return self.ask_zone(group, "group", None, owner, "roster", group, members)

    def kick_user(self, user: str, reason: str) -> bool:
        where = self.presence.get(user)
        if where is not None:
            self.bus.send(where[0], "kick", where[1], reason)
        return where is not None

    def tell_zones(self, what: str, key: str, value) -> None:
        for zone in self.zones:
            self.bus.send(zone, "mod", what, key, value)

    def snapshot(self) -> dict:
        return {"node": self.name, "online": len(self.presence), "rooms": len(self.rooms),
                "room_members": sum(sum(g.values()) for g in self.rooms.values()),
                "bus_drops": self.bus.drops, "log_drops": self.bus.log_drops,
                "counters": dict(self.stats)}
