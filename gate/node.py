"""The gate: client sockets in, bus envelopes out, and back.

It knows sockets, not chat: requests are validated and forwarded with a fresh ``req``
number and a deadline; the owning role answers with ``rep`` (or ``welcome``), which
pops the request. Deliveries (``dlv``) arrive once per gate and are framed once for all
local recipients. A restart of any other role leaves the client connections up.
"""
from __future__ import annotations

import collections
import random
import time

import gevent
from gevent.pool import Pool

from cluster.codec import ProtocolError, decode_body, packb, unpackb
from cluster.node import Node
from cluster.slots import SlotTable
from gate import handlers
from gate import stats as gate_stats
from gate.http import WebServer
from gate.delivery import Delivery
from gate.rooms import Rooms
from gate.session import Session
from gate.tcp import TcpFront

SWEEP_EVERY = 0.2
RETRY_MS = 1000
SLOW_GOODBYE = 10.0      # seconds a slow session gets to read its last frames and kicked{slow}
REDACT = {"password", "token"}


class GateNode(Delivery, Node):
    role = "gate"
    inline_inbox = True

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.conf = config.gate
        self.handlers = dict(handlers.HANDLERS)
        self.table = SlotTable.initial([n.name for n in config.nodes_of("zone")], config.chat.slots)
        self.sessions: dict = {}        # sid -> Session
        self.users: dict = {}           # user -> logged-in Session
        self.logging_in: dict = {}      # user -> Session whose login is in flight
        self.pending: dict = {}         # req -> (Session, rid, kind)
        # timeout -> deque of (deadline, req): one FIFO per timeout length, so each is in
        # deadline order and a request costs an append, not a heap push
        self.deadlines: dict = collections.defaultdict(collections.deque)
        self.dirty: list = []
        self._flush_scheduled = False
        self.id_base = random.getrandbits(40) << 16    # this incarnation's first id
        self.last_id = self.id_base
        self.login_timeout = max(self.conf.request_timeout, 10.0)
        self.stats = collections.Counter()
        self.frames_in = self.frames_out = self.closed_dropped = 0    # ops view: gate/stats.py
        self.rooms = Rooms(self)
        self.server = None
        self.web = None                 # HTTP + WebSocket on ws_port (gate/http.py)

    # -- wiring -------------------------------------------------------------------------
    def setup(self) -> str:
        self.bus.bind()
        for kind, fn in (("rep", self.on_rep), ("sent", self.on_sent), ("welcome", self.on_welcome), ("dlv", self.on_dlv),
                         ("kick", self.on_kick), ("hello", self.on_hello), ("rdlv", self.on_rdlv),
                         ("resumed", self.on_resumed)):
            self.bus.on(kind, fn)
        self.server = TcpFront(self, self.spec.host, self.spec.tcp_port)
        self.server.start()
        if self.spec.ws_port is not None:
            self.web = WebServer(self, Pool(self.conf.max_connections))
            self.web.start()
        self.spawn(self.deadline_worker)
        gate_stats.start(self)
        self.bus.send(self.center_node(), *self.presence_envelope([]))
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

    def new_id(self) -> int:
        """Session ids and request numbers: one counter from a random start per incarnation."""
        self.last_id += 1
        return self.last_id

    def presence_envelope(self, who: list) -> tuple:
        """A gate's sessions as of now: ids up to last_id issued by this incarnation, and
        the logins in flight (center keeps, but does not add, their binds)."""
        pending = [[user, s.sid] for user, s in self.logging_in.items()]
        return ("presence", self.name, who, self.rooms.counts(), self.id_base, self.last_id, pending)

    def login_node(self) -> str:
        return self.config.nodes_of("login")[0].name

    def dc_node(self) -> str:
        return self.config.nodes_of("dc")[0].name

    def center_node(self) -> str:
        return self.config.nodes_of("center")[0].name

    def zone_of(self, conv: str) -> str:
        return self.table.zone_of(conv)

    # -- the connection (read by gate/tcp.py, or gate/ws.py for WebSocket) ---------------
    def open_session(self, sock, peer) -> Session:
        s = Session(self.new_id(), sock, peer, self.conf, self.kick_slow)
        s.on_close = self.close_session
        self.sessions[s.sid] = s
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
            self.reply(s, handlers.error_body(exc.code, exc.reason))
            self.close_now(s)
            return False

    def handle_frames(self, s: Session, bodies) -> bool:
        """Dispatch each body; False once the session is closing (a bad body closes it)."""
        for body in bodies:
            try:
                msg = decode_body(body)
            except ProtocolError as exc:
                self.reply(s, handlers.error_body(exc.code, exc.reason))
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
    def kick(self, s: Session, reason: str) -> None:
        self.stats["kicked_" + reason] += 1
        self.reply(s, packb({"t": "kicked", "reason": reason}))
        self.close_now(s)

    def kick_slow(self, s: Session) -> None:
        """The outbox bound was hit for traffic that may not be dropped."""
        if s.closing:
            return
        self.stats["kicked_slow"] += 1
        s.cut_to_whole_frames()
        s.out.append(s.encode(packb({"t": "kicked", "reason": "slow"})))
        s.out_bytes += len(s.out[-1])
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
        if self.server is not None:
            self.server.room_freed()
        self.rooms.leave_all(s)
        if s.pending_user and self.logging_in.get(s.pending_user) is s:
            del self.logging_in[s.pending_user]
        if s.user is not None:
            if self.users.get(s.user) is s:
                del self.users[s.user]
            self.bus.send(self.center_node(), "unbind", s.user, self.name, s.sid)

    # -- requests -----------------------------------------------------------------------
    def forward(self, s: Session, rid, peer: str, kind: str, *fields, timeout=None) -> None:
        if s.inflight >= self.conf.max_inflight:
            raise handlers.BadRequest("rate_limited", "too many requests in flight; wait for replies")
        req = self.new_id()
        s.inflight += 1
        self.pending[req] = (s, rid, kind, fields[1] if kind == "join" else None)
        timeout = timeout or self.conf.request_timeout
        self.deadlines[timeout].append((time.monotonic() + timeout, req))
        self.bus.send(peer, kind, self.name, req, rid, *fields)

    def take(self, req: int):
        entry = self.pending.pop(req, None)
        if entry is not None:
            entry[0].inflight -= 1
        return entry

    def deadline_worker(self) -> None:
        """Requests with no reply by their deadline answer ``unavailable``."""
        while True:
            gevent.sleep(SWEEP_EVERY)
            self.server.sweep()
            for req in self.due_requests(time.monotonic()):
                entry = self.take(req)
                if entry is not None:
                    self.time_out(*entry)

    def due_requests(self, now: float) -> list:
        """Requests whose deadline passed (answered ones included: take() skips them)."""
        due = []
        for fifo in self.deadlines.values():
            while fifo and fifo[0][0] <= now:
                due.append(fifo.popleft()[1])
        return due

    def time_out(self, s: Session, rid, kind: str, note) -> None:
        self.stats["timeouts"] += 1
        if kind == "login":
            self._login_failed(s)
        elif kind == "join":
            self.rooms.leave(s, note)
        if kind == "resume":
            self.start_replay(s, [])
        elif not s.closed:
            self.reply(s, handlers.error_body(
                "unavailable", f"no answer to '{kind}' in time; retry later", rid,
                retry_ms=RETRY_MS))

    # -- bus handlers -------------------------------------------------------------------
    def on_rep(self, env) -> None:
        _, req, body = env[:3]
        entry = self.take(req)
        if entry is None:
            return
        s, _rid, kind, note = entry
        if kind == "resume":
            self.start_replay(s, [])
            return
        if kind == "login":
            self._login_failed(s)
            s.failed.add()
        if s.closed:
            return
        self.reply(s, body)
        if kind == "logout" and unpackb(body).get("t") == "ok":
            self.close_now(s)
        elif kind == "join":
            if len(env) > 3:
                self.rooms.joined(s, note, env[3])
            else:
                self.rooms.leave(s, note)

    def on_sent(self, env) -> None:
        """A zone stored a DM or group message sent here: the sender's ack, then the
        delivery to this gate's recipients (``rep`` + ``dlv`` in one envelope)."""
        _, req, body, users, conv, seq, record = env[:7]
        self.on_rep((None, req, body))
        self.on_dlv((None, users, conv, seq, record))

    def _login_failed(self, s: Session) -> None:
        if s.pending_user and self.logging_in.get(s.pending_user) is s:
            del self.logging_in[s.pending_user]
        s.pending_user = None
        s.held = None

    def on_kick(self, env) -> None:
        _, sid, reason = env[:3]
        s = self.sessions.get(sid)
        if s is not None and not s.closing:
            self.kick(s, reason)
