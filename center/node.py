"""Center: presence (user -> gate, session) and delivery routing, once per gate.

Center's state is soft: on start it says ``hello`` to every gate and the gates answer
with their sessions (``presence``), so a restart of center drops no connection. A ``dlv``
from a zone names its recipients; center groups them by gate and forwards the record
bytes (never decoded) in one ``dlv`` per gate.
"""
from __future__ import annotations

import collections
import os

from cluster.node import Node


class CenterNode(Node):
    role = "center"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.presence: dict = {}        # user -> (gate, sid)
        self.gates = [n.name for n in config.nodes_of("gate")]
        self.incarnation = os.getpid()
        self.stats = collections.Counter()

    def setup(self) -> str:
        addr = self.bus.bind()
        for kind, fn in (("bind", self.on_bind), ("unbind", self.on_unbind),
                         ("presence", self.on_presence), ("dlv", self.on_dlv)):
            self.bus.on(kind, fn)
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

    def on_presence(self, env) -> None:
        """A gate's full list: forget its sessions not listed, learn the listed ones."""
        _, gate, listed = env[:3]
        here = {(user, sid) for user, sid in listed}
        for user, where in list(self.presence.items()):
            if where[0] == gate and (user, where[1]) not in here:
                del self.presence[user]
        for user, sid in here:
            self.presence.setdefault(user, (gate, sid))

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
