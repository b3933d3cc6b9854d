"""The gate's delivery side: welcome and offline replay, DMs, holds, rooms, resume.

A component the gate node holds (``GateNode.delivery``), kept apart so each file tells
one story: node.py is sockets and requests, this is what arrives from the bus for the
sessions. DM and group pushes go through ``gate/fills.py``, which holds a push behind a
lost one and fetches that from the zone, so a session's live stream has no hole.

``handlers`` also takes ``Rep``, ahead of ``Requests.answer``. It catches the answers to
those fetches, and it reads the session's own acks: a session's own messages are never
pushed to it, so their seqs count as seen.
"""
from __future__ import annotations

import gevent

from cluster import convs
from cluster.codec import frame, packb, unpackb
from cluster.envelopes import Dlv, Hello, Rdlv, Rep, Resume, Resumed, Sent, Unbind, Welcome
from cluster.replies import Refused, with_rid
from gate.fills import Fills
from gate.session import Session

REPLAY_CHUNK = 256          # replayed frames written per socket drain


class Delivery:
    """Bus handlers that push to the gate's sessions."""

    def __init__(self, gate):
        self.gate = gate
        self.bus = gate.bus
        self.fills = Fills(gate)

    def handlers(self) -> dict:
        return {Welcome: self.on_welcome, Sent: self.on_sent, Dlv: self.on_dlv, Rep: self.on_rep,
                Hello: self.on_hello, Resumed: self.on_resumed, Rdlv: self.on_rdlv}

    def on_rep(self, env: Rep) -> None:
        """An answer: to a fill's fetch (kept from the client), else to a client request."""
        if self.fills.answer(env):
            return
        p = self.gate.requests.pending.get(env.req)
        if p is not None and p.env.KIND == "send" and convs.is_durable(p.env.conv):
            ack = unpackb(env.body)
            if ack.get("t") == "ack":
                self.own(p.session, p.env.conv, ack.get("seq"))
        self.gate.requests.answer(env)

    def own(self, s: Session, conv: str, seq) -> None:
        """The session's own message was stored as ``seq``: seen, though never pushed."""
        if s.closed or not isinstance(seq, int):
            return
        if s.held is not None:
            self.hold(s, conv, seq, None)
        else:
            self.fills.offer(s, conv, seq, None)

    def on_welcome(self, env: Welcome) -> None:
        gate = self.gate
        p = gate.requests.take(env.req)
        if p is None or p.session.closed:
            self.bus.send(gate.center_node(), Unbind(env.user, gate.name, p.session.sid if p else -1))
            return
        s, user = p.session, env.user
        if gate.logging_in.get(user) is s:
            del gate.logging_in[user]
        s.pending_user, s.user = None, user
        s.blocked = set(env.blocked)
        old = gate.users.get(user)
        gate.users[user] = s
        if old is not None and old is not s and not old.closing:
            gate.kick(old, "session_replaced")
        welcome = unpackb(env.body)
        status = welcome.get("status") or {}
        s.status = (status.get("text", ""), bool(status.get("hidden")))
        s.read_sent = dict(welcome.get("read") or {})       # read pushes never go back
        # sys messages up to the welcome's are history, not news: held ones above it follow
        s.seen["sys"] = s.room_floor["sys"] = welcome.get("convs", {}).get("sys", 0)
        gate.reply(s, with_rid(env.body, p.rid), logged=with_rid(packb(dict(welcome, token="***")), p.rid))
        self.start_replay(s, env.replay, welcome.get("convs"))

    def on_sent(self, env: Sent) -> None:
        """A zone stored a DM or group message sent here: the sender's ack, then the
        delivery to this gate's recipients (``rep`` + ``dlv`` in one envelope)."""
        p = self.gate.requests.pending.get(env.req)
        if p is not None:
            self.own(p.session, env.conv, env.seq)
        self.gate.requests.answer(env)
        self.deliver(env.users, env.conv, env.seq, env.record)

    def start_replay(self, s: Session, replay, floors: dict | None = None) -> None:
        """Push ``replay``, then what was held meanwhile. ``floors`` (welcome.convs) are what
        the welcome told the client it may sync: the seqs live pushes continue from."""
        held, s.held = s.held or [], None
        if not replay:
            self.set_floors(s, floors)
            self.deliver_held(s, held)
            return
        s.replaying = True
        s.held = held
        gevent.spawn(self.replay_worker, s, replay, floors)

    @staticmethod
    def set_floors(s: Session, floors: dict | None) -> None:
        """After the replay, each DM and group continues from its welcome last seq: a seq
        above it that is missing is a hole (gate/fills.py); one below it was in the replay,
        or is for the client to sync (a replay capped at ``chat.replay_max``)."""
        for conv, last in (floors or {}).items():
            if isinstance(last, int) and convs.is_durable(conv) and last > s.seen.get(conv, 0):
                s.seen[conv] = last

    def replay_worker(self, s: Session, replay, floors: dict | None = None) -> None:
        """Offline replay, paced by the socket: never counts as a slow consumer."""
        chunk = []
        for conv, seq, record in replay:
            if seq <= s.seen.get(conv, 0):
                continue
            s.seen[conv] = seq
            chunk.append(s.encode(record))
            if len(chunk) >= REPLAY_CHUNK:
                self._write_chunk(s, chunk)
                chunk = []
            if s.closed:
                return
        self._write_chunk(s, chunk)
        s.replaying = False
        self.set_floors(s, floors)
        held, s.held = s.held or [], None
        self.deliver_held(s, held)

    def _write_chunk(self, s: Session, chunk: list) -> None:
        s.outbox.extend(chunk)
        self.gate.frames_out += len(chunk)
        self.bus.record("out", s.sid, s.user, b"", len(chunk))
        s.flush_blocking(timeout=30.0)

    def deliver_held(self, s: Session, held: list) -> None:
        for conv, seq, data in held:
            if convs.is_durable(conv):
                self.fills.offer(s, conv, seq, data)
            else:
                self.push_record(s, conv, seq, data)
        if held:
            self.gate.mark_dirty(s)

    def push_record(self, s: Session, conv: str, seq: int, data: bytes) -> bool:
        """Queue a framed ``sys`` message held behind a login unless the session has it."""
        if seq <= s.seen.get(conv, 0):
            return False
        s.seen[conv] = seq
        return s.queue(data)

    def on_dlv(self, env: Dlv) -> None:
        self.deliver(env.users, env.conv, env.seq, env.record)

    def deliver(self, users: list, conv: str, seq: int, record: bytes) -> None:
        """A stored DM or group message to the recipients here (framed once)."""
        gate = self.gate
        data, count, ws_cache = frame(record), 0, {}
        for user in users:
            s = gate.users.get(user)
            if s is None or s.held is not None:
                s = s or gate.logging_in.get(user)
                if s is not None:
                    self.hold(s, conv, seq, data if s.tcp else s.encode_cached(record, ws_cache))
                continue
            if self.fills.offer(s, conv, seq, data if s.tcp else s.encode_cached(record, ws_cache)):
                gate.mark_dirty(s)
                count += 1
        if count:
            gate.frames_out += count
            self.bus.record("out", None, None, record, count)

    def hold(self, s: Session, conv: str, seq: int, data: bytes | None) -> None:
        """Live DMs wait behind the replay (``data`` None: the session's own message). Past
        the bound they are left out (counted): the gap is filled once the replay is over
        (gate/fills.py), and replay never makes a session 'slow'."""
        if s.held is None:
            s.held = []
        if len(s.held) >= self.gate.config.chat.replay_max * 4:
            self.gate.stats["held_dropped"] += 1
            return
        s.held.append((conv, seq, data))

    def on_hello(self, env: Hello) -> None:
        """Center (re)started: tell it who is here."""
        gate = self.gate
        who = [[user, s.sid] for user, s in gate.users.items()]
        self.bus.send(gate.center_node(), gate.presence(who))
        self.bus.send(gate.center_node(), gate.live.watches())
        for s in list(gate.users.values()):
            self.resume(s)

    def resume(self, s: Session) -> None:
        """Deliveries in flight when center died are lost: ask for what this session lacks.

        Live deliveries are held meanwhile so the session still sees each conversation
        in seq order; the request passes through center after the presence above.
        """
        if s.held is None and not s.replaying:
            s.held = []
        try:
            self.gate.requests.forward(s, None, self.gate.center_node(), Resume, s.user, dict(s.seen))
        except Refused:
            self.start_replay(s, [])

    def on_resumed(self, env: Resumed) -> None:
        p = self.gate.requests.take(env.req)
        if p is not None and not p.session.closed:
            self.start_replay(p.session, env.replay)

    def on_rdlv(self, env: Rdlv) -> None:
        self.gate.rooms.deliver(env.conv, env.seq, env.record, env.sender)
