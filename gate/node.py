"""The gate: client sockets in, bus envelopes out, and back.

It knows sockets, not chat: requests are validated (gate/handlers.py) and forwarded with
a fresh ``req`` number and a deadline (gate/requests.py); the owning role answers with a
``Rep`` (or ``Welcome``), which pops the request, and the gate adds the client's rid.
Deliveries arrive once per gate and are framed once for all local recipients
(gate/delivery.py, gate/rooms.py). A restart of any other role leaves the client
connections up.
"""
from __future__ import annotations

import collections
import random
import time

import gevent
from gevent.pool import Pool

from cluster.codec import ProtocolError, decode_body, packb
from cluster.envelopes import Drain, Kick, Presence, Table, Unbind
from cluster.metrics import ACK_BOUNDS, Buckets
from cluster.node import Node
from cluster.replies import error, error_code
from cluster import slots
from cluster.slots import SlotTable
from gate import drain, handlers
from gate import stats as gate_stats
from gate.delivery import Delivery
from gate.http import WebServer
from gate.live import HANDLERS as LIVE_HANDLERS, Live
from gate.limits import MAX_DEPTH, AddressCounts, AddressWindows, address, too_deep
from gate.requests import Requests
from gate.rooms import Rooms
from gate.session import Session
from gate.tcp import TcpFront

SWEEP_EVERY = 0.2
SLOW_GOODBYE = 10.0      # seconds a slow session gets to read its last frames and kicked{slow}
REDACT = {"password", "token"}


class GateNode(Node):
    role = "gate"
    inline_inbox = True

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.conf = config.gate
        self.handlers = {**handlers.HANDLERS, **LIVE_HANDLERS}
        self.table = SlotTable.initial([n.name for n in config.nodes_of("zone")], config.chat.slots)
        self.sessions: dict = {}        # sid -> Session
        self.users: dict = {}           # user -> logged-in Session
        self.logging_in: dict = {}      # user -> Session whose login is in flight
        self.requests = Requests(self)
        self.dirty: list = []
        self._flush_scheduled = False
        self.id_base = random.getrandbits(40) << 16    # this incarnation's first id
        self.last_id = self.id_base
        self.login_timeout = max(self.conf.request_timeout, 10.0)
        self.stats = collections.Counter()
        self.frames_in = self.frames_out = self.closed_dropped = 0    # ops view: gate/stats.py
        self.replies = 0                # of frames_out: answers to requests, errors included
        self.errors = collections.Counter()     # error frames sent, by code
        self.ack_seconds = Buckets(ACK_BOUNDS)  # a send forwarded -> its answer
        self.rooms = Rooms(self)
        self.delivery = Delivery(self)
        self.live = Live(self)          # read receipts, typing, presence (gate/live.py)
        self.server = None
        self.web = None                 # HTTP + WebSocket on ws_port (gate/http.py)
        self.draining = False           # zonechat drain: accepting nothing, moving sessions away
        conf = self.conf                # abuse limits by client address (gate/limits.py)
        self.conns_per_ip = AddressCounts(conf.max_connections_per_ip)
        self.registers_per_ip = AddressWindows(conf.register_per_ip, conf.limit_window)
        self.failed_per_ip = AddressWindows(conf.failed_logins_per_ip, conf.limit_window)

    # -- wiring -------------------------------------------------------------------------
    def setup(self) -> str:
        self.bus.bind()
        # Rep goes to delivery first: a fill's own fetch (gate/fills.py), else requests.answer
        handlers = {Kick: self.on_kick, Drain: self.on_drain, Table: self.on_table, **self.delivery.handlers(),
                    **self.live.handlers()}
        for cls, fn in handlers.items():
            self.bus.on(cls, fn)
        self.server = TcpFront(self, self.spec.host, self.spec.tcp_port)
        self.server.start()
        if self.spec.ws_port is not None:
            self.web = WebServer(self, Pool(self.conf.max_connections))
            self.web.start()
        self.spawn(self.deadline_worker)
        gate_stats.start(self)
        self.bus.send(self.center_node(), self.presence([]))
        return f"{self.spec.host}:{self.spec.tcp_port}"

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()         # no new connections; the open ones get their kick
        if self.web is not None:
            self.web.close()
        body = packb({"t": "kicked", "reason": "shutdown"})
        for s in list(self.sessions.values()):
            s.queue(s.encode(body))
            s.flush_blocking(timeout=0.5)
            s.abort()

    def metrics(self, fam) -> None:
        gate_stats.metrics(self, fam)

    def ready_checks(self) -> dict:
        return gate_stats.ready_checks(self)

    def watched_peers(self) -> list[str]:
        return [self.center_node(), *self.zone_nodes()]

    def new_id(self) -> int:
        """Session ids and request numbers: one counter from a random start per incarnation."""
        self.last_id += 1
        return self.last_id

    def presence(self, who: list) -> Presence:
        """A gate's sessions as of now: ids up to last_id issued by this incarnation, and
        the logins in flight (center keeps, but does not add, their binds)."""
        pending = [[user, s.sid] for user, s in self.logging_in.items()]
        return Presence(self.name, who, self.rooms.counts(), self.id_base, self.last_id, pending)

    def login_node(self) -> str:
        return self.config.nodes_of("login")[0].name

    def dc_node(self) -> str:
        return self.config.nodes_of("dc")[0].name

    def zone_nodes(self) -> list[str]:
        return [n.name for n in self.config.nodes_of("zone")]

    def center_node(self) -> str:
        return self.config.nodes_of("center")[0].name

    def zone_of(self, conv: str) -> str:
        return self.table.zone_of(conv)

    def on_table(self, env: Table) -> None:
        """Center handed slots to other zones (a zone failed or came back): route by it."""
        table = slots.newer(self.table, *env)
        if table is not None:
            self.table = table
            self.log.info("slot table %d: %s", table.version, table.counts())

    def forward(self, s: Session, rid, peer: str, cls, *fields, timeout=None) -> None:
        """A client request on to ``peer`` as ``cls(gate, req, *fields)``."""
        self.requests.forward(s, rid, peer, cls, *fields, timeout=timeout)

    # -- the connection (read by gate/tcp.py, or gate/ws.py for WebSocket) ---------------
    def open_session(self, sock, peer, cls=Session, **extra) -> Session:
        """Every connection, TCP or WebSocket, starts here; ``close_session`` ends it."""
        s = cls(self.new_id(), sock, peer, self.conf, self.kick_slow, **extra)
        s.on_close = self.close_session
        now = time.monotonic()
        s.login_by = now + self.conf.login_timeout
        s.last_rx = now
        self.sessions[s.sid] = s
        if not s.tcp:
            self.stats["ws_sessions"] += 1
        return s

    def time_left(self, s: Session, now: float) -> float:
        """Seconds left: to log in (a deadline from connect, not reset by pings), or of
        silence once logged in or while a login is being answered."""
        if s.user is None and s.pending_user is None:
            return s.login_by - now
        return s.last_rx + self.conf.idle_timeout - now

    def ingest(self, s: Session, data: bytes) -> bool:
        try:
            return self.handle_frames(s, s.reader.feed(data))
        except ProtocolError as exc:
            # frames that came whole before a bad length are answered first
            if exc.frames and not self.handle_frames(s, exc.frames):
                return False
            self.reply(s, error(exc.code, exc.reason))
            self.close_now(s)
            return False

    def handle_frames(self, s: Session, bodies) -> bool:
        """Dispatch each body; False once the session is closing (a bad body closes it)."""
        for body in bodies:
            try:
                msg = decode_body(body)
                if too_deep(msg, len(body)):
                    raise ProtocolError("bad_frame", f"nested more than {MAX_DEPTH} deep")
            except ProtocolError as exc:
                self.reply(s, error(exc.code, exc.reason))
                self.close_now(s)
                return False
            self.record_in(s, msg, body)
            handlers.dispatch(self, s, msg)
            if s.closing or s.closed:
                return False
        return True

    def record_in(self, s: Session, msg: dict, body: bytes) -> None:
        if not REDACT.isdisjoint(msg):
            body = packb({k: ("***" if k in REDACT else v) for k, v in msg.items()})
        self.frames_in += 1
        self.bus.record("in", s.sid, s.user or s.pending_user, body)

    # -- output -------------------------------------------------------------------------
    def reply(self, s: Session, body: bytes, logged: bytes | None = None) -> None:
        """Queue one body for one session and record it (``logged``: a redacted copy)."""
        if s.queue(s.encode(body)):
            self.mark_dirty(s)
        self.frames_out += 1
        self.replies += 1
        code = error_code(body)
        if code is not None:
            self.errors[code] += 1
        self.bus.record("out", s.sid, s.user, body if logged is None else logged, 1)

    def mark_dirty(self, s: Session) -> None:
        if not s.dirty:
            s.dirty = True
            self.dirty.append(s)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                gevent.get_hub().loop.run_callback(self.flush_dirty)

    def flush_dirty(self) -> None:
        """End of tick: one send() per session that has output."""
        self._flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for s in dirty:
            s.flush()

    # -- closing ------------------------------------------------------------------------
    def kick(self, s: Session, reason: str, body: bytes | None = None) -> None:
        """``kicked{reason}`` (or the given encoded kick ``body``), then the close."""
        self.stats["kicked_" + reason] += 1
        self.reply(s, body or packb({"t": "kicked", "reason": reason}))
        self.close_now(s)

    def kick_slow(self, s: Session) -> None:
        """The outbox bound was hit for traffic that may not be dropped."""
        if s.closing:
            return
        self.stats["kicked_slow"] += 1
        s.last_frame(s.encode(packb({"t": "kicked", "reason": "slow"})))
        s.closing = True
        gevent.spawn(self._finish_close, s, SLOW_GOODBYE)

    def close_now(self, s: Session) -> None:
        s.closing = True
        gevent.spawn(self._finish_close, s)

    def _finish_close(self, s: Session, timeout: float = 1.0) -> None:
        # a drain greenlet may be writing too: each send takes from the head of the same
        # queue without yielding in between, so the bytes stay in order
        s.flush_blocking(timeout=timeout)
        s.abort()

    def close_session(self, s: Session) -> None:
        """End a session once (its abort calls this again, a no-op then)."""
        if self.sessions.pop(s.sid, None) is None:
            s.abort()
            return
        s.abort()
        self.closed_dropped += s.dropped
        if s.tcp:                       # WebSocket connections are counted by gate/http.py
            self.conns_per_ip.release(address(s.peer))
        if self.server is not None:
            self.server.room_freed()
        self.rooms.leave_all(s)
        if s.pending_user and self.logging_in.get(s.pending_user) is s:
            del self.logging_in[s.pending_user]
        if s.user is not None:
            if self.users.get(s.user) is s:
                del self.users[s.user]
            self.bus.send(self.center_node(), Unbind(s.user, self.name, s.sid))

    def login_failed(self, s: Session) -> None:
        """A login in flight ended without a welcome."""
        if s.pending_user and self.logging_in.get(s.pending_user) is s:
            del self.logging_in[s.pending_user]
        s.pending_user = None
        s.held = None

    # -- workers and bus handlers -------------------------------------------------------
    def deadline_worker(self) -> None:
        """Login and idle timeouts (the TCP wheel) and request deadlines."""
        while True:
            gevent.sleep(SWEEP_EVERY)
            self.server.sweep()
            now = time.monotonic()
            self.requests.expire(now)
            self.registers_per_ip.prune(now)
            self.failed_per_ip.prune(now)

    def on_drain(self, env: Drain) -> None:
        """``zonechat drain`` through center: move every session away, then exit (gate/drain.py)."""
        self.answer(env.node, env.req, packb(drain.begin(self, env.over)))

    def on_kick(self, env: Kick) -> None:
        s = self.sessions.get(env.sid)
        if s is not None and not s.closing:
            self.kick(s, env.reason)
