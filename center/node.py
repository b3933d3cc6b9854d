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

from cluster import envelopes
from cluster.codec import packb, unpackb
from cluster.envelopes import (Bind, Bound, Dlv, Drain, Group, Hello, Join, Kick, Mod, Notify, Post, Presence,
                               Rdlv, Rep, Resume, Rnotify, RoomCount, RoomInfo, Stats, Status, Typing, Unbind,
                               Watch, Watches)
from cluster.node import Node
from cluster.replies import error
from cluster.stats import bus_counters
from center.admin import AdminApi
from center.ownership import Ownership
from center.watchers import Watchers
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
        self.stats = collections.Counter()
        self.store = Store.from_config(config, max_connections=8)
        self.ownership = Ownership(self)    # the slot table, zone heartbeats, handovers
        self.moderation = ModerationStore(self.store)
        self.zones = [n.name for n in config.nodes_of("zone")]
        self.login_node = config.nodes_of("login")[0].name
        self.waiting: dict = {}
        self._reqs = itertools.count(1)
        self.ops = Ops(self)            # the operator view: nodes' reports, last admin actions
        self.admin = AdminApi(self)
        self.watchers = Watchers(self)  # presence_sub lists and statuses (center/watchers.py)

    def shutdown(self) -> None:
        self.admin.stop()
        self.store.close()

    def setup(self) -> str:
        addr = self.bus.bind()
        for cls, fn in ((Bind, self.on_bind), (Unbind, self.on_unbind),
                        (Presence, self.on_presence), (Dlv, self.on_dlv),
                        (Rdlv, self.on_rdlv), (RoomCount, self.on_roomcount),
                        (Join, self.on_join), (RoomInfo, self.on_room_info),
                        (Rep, self.on_rep), (Resume, self.on_resume),
                        (Notify, self.on_notify), (Typing, self.on_typing),
                        (Watch, self.watchers.on_watch), (Watches, self.watchers.on_watches),
                        (Status, self.watchers.on_status), (Stats, self.ops.on_stats)):
            self.bus.on(cls, fn)
        self.ownership.start()
        if self.spec.admin_port:
            self.admin.start(self.spec.admin_host, self.spec.admin_port)
        for gate in self.gates:
            self.bus.send(gate, Hello(self.incarnation))
        return addr

    @property
    def table(self):
        return self.ownership.table

    def watched_peers(self) -> list[str]:
        return self.zone_names()

    def zone_names(self) -> list[str]:
        return [n.name for n in self.config.nodes_of("zone")]

    def metrics(self, fam) -> None:
        fam.gauge("online_users", "users logged in on any gate (center's presence)", len(self.presence))
        fam.gauge("rooms", "rooms with a member on some gate", len(self.rooms))
        fam.counter("routed", "deliveries routed to gates, by kind (dlv: DM/group, rdlv: room/sys)",
                    {k: self.stats.get(k, 0) for k in ("dlv", "rdlv")}, label="kind")
        super().metrics(fam)

    def ready_checks(self) -> dict:
        """Center routes between zones and gates: it needs a live link to every zone."""
        return {"zones": all(self.bus.linked(z) for z in self.zone_names())}

    def on_bind(self, env: Bind) -> None:
        old = self.presence.get(env.user)
        if old is not None and old != (env.gate, env.sid):
            self.bus.send(old[0], Kick(old[1], "session_replaced"))
        was_visible = self.watchers.visible(env.user)
        self.presence[env.user] = (env.gate, env.sid)
        self.bus.send(env.login, Bound(env.bind_id))
        self.watchers.came_online(env.user, env.sid, env.status, was_visible)

    def on_unbind(self, env: Unbind) -> None:
        if self.presence.get(env.user) == (env.gate, env.sid):
            del self.presence[env.user]
            self.watchers.went_offline(env.user)

    def on_resume(self, env: Resume) -> None:
        """Passed on to login after the gate's presence (same pipe, so already applied)."""
        self.bus.send(self.login_node, env)

    def on_presence(self, env) -> None:
        """A gate's full list as of its id ``last``: forget its sessions not listed, learn the
        listed ones. A bind with a newer id than the list came from login after the list
        was made (another pipe, so it may arrive first) and stays."""
        gate, listed, rooms, base, last, pending = env
        here = {(user, sid) for user, sid in listed}
        keep = here | {(user, sid) for user, sid in pending}
        for user, where in list(self.presence.items()):
            newer = base <= where[1] and where[1] > last
            if where[0] == gate and (user, where[1]) not in keep and not newer:
                del self.presence[user]
                self.watchers.went_offline(user)
        for user, sid in here:
            self.presence.setdefault(user, (gate, sid))
        for room in list(self.rooms):
            self._set_count(room, gate, rooms.get(room, 0))
        for room, count in rooms.items():
            self._set_count(room, gate, count)
        if self.table.version > 1:          # a gate that (re)started routes by the initial table
            self.ownership.publish([gate])

    def on_dlv(self, env: Dlv) -> None:
        by_gate: dict = {}
        presence = self.presence
        for user in env.users:
            where = presence.get(user)
            if where is not None:
                by_gate.setdefault(where[0], []).append(user)
        for gate, local in by_gate.items():
            self.bus.send(gate, env._replace(users=local))
        self.stats["dlv"] += 1

    def on_notify(self, env: Notify) -> None:
        """A live push (read, typing, presence) to the gates of the users online."""
        by_gate: dict = {}
        presence = self.presence
        for user in env.users:
            where = presence.get(user)
            if where is not None:
                by_gate.setdefault(where[0], []).append(user)
        for gate, local in by_gate.items():
            self.bus.send(gate, env._replace(users=local))

    def on_typing(self, env: Typing) -> None:
        """Typing in a room (DMs come as notify, groups go to their zone): to the gates
        with members, while the room is below chat.typing_max_members."""
        gates = self.rooms.get(env.conv, {})
        if not gates or self.members(env.conv) >= self.config.chat.typing_max_members:
            return
        packed = envelopes.pack(Rnotify(env.conv, packb({"t": "typing", "conv": env.conv, "user": env.user}),
                                        env.user))
        for gate in gates:
            self.bus.send_packed(gate, packed)

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

    def on_roomcount(self, env: RoomCount) -> None:
        self._set_count(env.room, env.gate, env.count)

    def on_join(self, env: Join) -> None:
        """Forward a join to the room's zone after the gate is subscribed: no gap."""
        zone = self.table.zone_of(env.room)
        self.bus.send(zone, env._replace(members=self.members(env.room)))

    def on_room_info(self, env: RoomInfo) -> None:
        body = {"t": "room_info", "room": env.room, "members": self.members(env.room)}
        self.bus.send(env.gate, Rep(env.req, packb(body)))

    def on_rdlv(self, env: Rdlv) -> None:
        """A room or sys message: once to each gate that needs it."""
        conv = env.conv
        gates = self.gates if conv == "sys" else self.rooms.get(conv, ())
        if gates:
            packed = envelopes.pack(env)
            for gate in gates:
                self.bus.send_packed(gate, packed)
        self.stats["rdlv"] += 1

    # -- admin ----------------------------------------------------------------------------
    def ask_zone(self, conv: str, cls, *fields) -> dict:
        """Send ``cls(center, req, *fields)`` to the zone of ``conv`` and wait for its answer."""
        return self.ask(self.table.zone_of(conv), cls, *fields)

    def ask(self, node: str, cls, *fields) -> dict:
        """Send ``cls(center, req, *fields)`` to ``node`` and wait for its answer."""
        req = next(self._reqs)
        result = self.waiting[req] = AsyncResult()
        self.bus.send(node, cls(self.name, req, *fields))
        try:
            return unpackb(result.get(timeout=ADMIN_WAIT))
        except gevent.Timeout:
            return unpackb(error("unavailable", f"{node} did not answer"))
        finally:
            self.waiting.pop(req, None)

    def drain_gate(self, gate: str, over: float) -> dict:
        """``zonechat drain``: the gate's answer ``{t: ok, sessions, already, retry_ms}`` (gate/drain.py)."""
        return self.ask(gate, Drain, over)

    def on_rep(self, env: Rep) -> None:
        result = self.waiting.get(env.req)
        if result is not None:
            result.set(env.body)

    def post(self, conv: str, cid: str, body_raw: bytes, kind: str | None = None, ref: int = 0) -> dict:
        return self.ask_zone(conv, Post, conv, cid, body_raw, kind, ref)

    def group_roster(self, group: str, owner: str, members: list) -> dict:
        return self.ask_zone(group, Group, owner, "roster", group, members)

    def kick_user(self, user: str, reason: str) -> bool:
        where = self.presence.get(user)
        if where is not None:
            self.bus.send(where[0], Kick(where[1], reason))
        return where is not None

    def tell_zones(self, what: str, key: str, value) -> None:
        for zone in self.zones:
            self.bus.send(zone, Mod(what, key, value))

    def snapshot(self) -> dict:
        return {"node": self.name, "online": len(self.presence), "rooms": len(self.rooms),
                "room_members": sum(sum(g.values()) for g in self.rooms.values()),
                **bus_counters(self.bus), "counters": dict(self.stats), "slots": self.ownership.snapshot()}
