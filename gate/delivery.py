"""The gate's delivery side: welcome and offline replay, DMs, holds, rooms, resume.

A mixin of ``GateNode`` (gate/node.py), kept apart so each file tells one story: node.py
is sockets and requests, this is what arrives from the bus for the sessions.
"""
from __future__ import annotations

import gevent

from cluster.codec import frame, packb, unpackb
from gate import handlers
from gate.session import Session


class Delivery:
    """Bus handlers that push to sessions; expects the GateNode attributes."""

    def on_welcome(self, env) -> None:
        _, req, user, body, replay, blocked = env[:6]
        entry = self.take(req)
        if entry is None or entry[0].closed:
            self.bus.send(self.center_node(), "unbind", user, self.name,
                          entry[0].sid if entry else -1)
            return
        s = entry[0]
        if self.logging_in.get(user) is s:
            del self.logging_in[user]
        s.pending_user, s.user = None, user
        s.blocked = set(blocked)
        old = self.users.get(user)
        self.users[user] = s
        if old is not None and old is not s and not old.closing:
            self.kick(old, "session_replaced")
        welcome = unpackb(body)
        # sys messages up to the welcome's are history, not news: held ones above it follow
        s.seen["sys"] = s.room_floor["sys"] = welcome.get("convs", {}).get("sys", 0)
        self.reply(s, body, logged=packb(dict(welcome, token="***")))
        self.start_replay(s, replay)

    def start_replay(self, s: Session, replay) -> None:
        held, s.held = s.held or [], None
        if not replay:
            self.deliver_held(s, held)
            return
        s.replaying = True
        s.held = held
        gevent.spawn(self.replay_worker, s, replay)

    def replay_worker(self, s: Session, replay) -> None:
        """Offline replay, paced by the socket: never counts as a slow consumer."""
        chunk = []
        for conv, seq, record in replay:
            if seq <= s.seen.get(conv, 0):
                continue
            s.seen[conv] = seq
            chunk.append(s.encode(record))
            if len(chunk) >= 256:
                self._write_chunk(s, chunk)
                chunk = []
            if s.closed:
                return
        self._write_chunk(s, chunk)
        s.replaying = False
        held, s.held = s.held or [], None
        self.deliver_held(s, held)

    def _write_chunk(self, s: Session, chunk: list) -> None:
        s.out.extend(chunk)
        s.out_bytes += sum(len(c) for c in chunk)
        self.frames_out += len(chunk)
        self.bus.record("out", s.sid, s.user, b"", len(chunk))
        s.flush_blocking(timeout=30.0)

    def deliver_held(self, s: Session, held: list) -> None:
        for conv, seq, data in held:
            self.push_record(s, conv, seq, data)
        if held:
            self.mark_dirty(s)

    def push_record(self, s: Session, conv: str, seq: int, data: bytes) -> bool:
        """Queue a framed durable message unless this session already has that seq."""
        if seq <= s.seen.get(conv, 0):
            return False
        s.seen[conv] = seq
        return s.queue(data)

    def on_dlv(self, env) -> None:
        _, users, conv, seq, record = env[:5]
        data, count, ws_cache = frame(record), 0, {}
        for user in users:
            s = self.users.get(user)
            if s is None or s.held is not None:
                s = s or self.logging_in.get(user)
                if s is not None:
                    self.hold(s, conv, seq, data if s.tcp else s.encode_cached(record, ws_cache))
                continue
            if self.push_record(s, conv, seq, data if s.tcp else s.encode_cached(record, ws_cache)):
                self.mark_dirty(s)
                count += 1
        if count:
            self.frames_out += count
            self.bus.record("out", None, None, record, count)

    def hold(self, s: Session, conv: str, seq: int, data: bytes) -> None:
        """Live DMs wait behind the replay. Past the bound they are left out (counted):
        the client sees the seq gap and syncs, and replay never makes a session 'slow'."""
        if s.held is None:
            s.held = []
        if len(s.held) >= self.config.chat.replay_max * 4:
            self.stats["held_dropped"] += 1
            return
        s.held.append((conv, seq, data))

    def on_hello(self, env) -> None:
        """Center (re)started: tell it who is here."""
        who = [[user, s.sid] for user, s in self.users.items()]
        self.bus.send(self.center_node(), *self.presence_envelope(who))
        for s in list(self.users.values()):
            self.resume(s)

    def resume(self, s: Session) -> None:
        """Deliveries in flight when center died are lost: ask for what this session lacks.

        Live deliveries are held meanwhile so the session still sees each conversation
        in seq order; the request passes through center after the presence above.
        """
        if s.held is None and not s.replaying:
            s.held = []
        try:
            self.forward(s, None, self.center_node(), "resume", s.user, dict(s.seen))
        except handlers.BadRequest:
            self.start_replay(s, [])

    def on_resumed(self, env) -> None:
        entry = self.take(env[1])
        if entry is not None and not entry[0].closed:
            self.start_replay(entry[0], env[2])

    def on_rdlv(self, env) -> None:
        _, conv, seq, record, sender = env[:5]
        self.rooms.deliver(conv, seq, record, sender)
