"""Gapless live DMs and groups: a session's pushes of one conversation never skip a seq.

A delivery can be lost between the store and the gate: a zone SIGKILLed right after its
store call, a Redis that ran a store script whose answer it never sent. The next delivery
of that conversation then arrives with a seq past the one the session needs. Pushing it
would leave a hole that only the client's own ``sync`` repairs, so instead the gate holds
it (and whatever follows in that conversation) and asks the conversation's zone for the
missing seqs with a ``Sync`` of its own, whose ``Rep`` never reaches the client. Then it
pushes everything in seq order.

Bounds and policy (docs/protocol.md §7.3):

- A hole wider than ``chat.replay_max`` is not fetched. A gap that wide is not a lost
  delivery in flight (a group rejoined after a long absence, say), and the client syncs
  it, as it does after a capped offline replay.
- Each fetch waits up to ``gate.request_timeout``. A timeout or an ``unavailable`` answer
  asks again, up to FILL_TRIES asks in a row that bring nothing.
- A session holds at most ``gate.outbox_bytes`` of frames behind its holes.

Past any bound the gate gives up on that hole: it pushes what it holds, in seq order, and
the client's sync covers the rest. Given-up holes are counted in the gate's stats
(``fill_gave_up``).

The session's own messages are never pushed to it. Their acks (``Sent``, or a ``Rep`` to a
``send``) count as seen (``offer`` with no frame), so a reply right after one's own
message is no hole.
"""
from __future__ import annotations

import gevent

from cluster.codec import packb, unpackb
from cluster.envelopes import Sync

FILL_TRIES = 3          # fetches in a row without progress before a hole is given up
RETRY_AFTER = 1.0       # seconds before asking again after an `unavailable` answer


class Fill:
    """One hole: a session's held frames of one conversation and the fetch in flight."""

    __slots__ = ("session", "conv", "held", "size", "req", "tries", "timer", "over")

    def __init__(self, session, conv: str):
        self.session, self.conv = session, conv
        self.held: dict = {}        # seq -> frame; None: the session's own message
        self.size = 0               # bytes of the held frames
        self.req = 0                # the fetch in flight
        self.tries = 0              # fetches since the last progress
        self.timer = None
        self.over = False           # the session's hold bound was passed: give up


class Fills:
    """The holes being filled, by session id and conversation and by fetch number."""

    def __init__(self, gate):
        self.gate = gate
        self.by_session: dict = {}      # sid -> {conv: Fill}
        self.by_req: dict = {}          # req -> Fill
        self.max_hole = gate.config.chat.replay_max
        self.page = gate.config.chat.sync_max
        self.max_bytes = gate.conf.outbox_bytes

    def __len__(self) -> int:
        return len(self.by_req)

    # -- the delivery side --------------------------------------------------------------
    def offer(self, s, conv: str, seq: int, data: bytes | None) -> bool:
        """Seq ``seq`` of durable ``conv`` for session ``s``. ``data`` is its frame, or None
        for the session's own message (seen, nothing to push). It is pushed if it is next,
        dropped if the session has it, held behind a hole otherwise. Returns True when
        ``data`` itself was queued now. Frames a fill releases are accounted here."""
        fills = self.by_session.get(s.sid)
        fill = fills.get(conv) if fills else None
        if fill is not None:
            self._hold(fill, seq, data)
            self._settle(fill)
            return False
        base = s.seen.get(conv)
        if base is None:
            # a group this session never saw: it may have been added just now, and an added
            # member starts at the group's last seq, so the first message sets the base
            base = seq - 1 if conv.startswith("g:") else 0
        if seq <= base:
            return False
        if seq > base + 1:
            if seq - base - 1 <= self.max_hole:
                fill = self._start(s, conv, base)
                self._hold(fill, seq, data)
                if not fill.over:
                    self._ask(fill)
                    return False
                self._settle(fill)
                return False
            self.gate.stats["fill_skipped"] += 1
        s.seen[conv] = seq
        return data is not None and s.queue(data)

    def _start(self, s, conv: str, base: int) -> Fill:
        fill = Fill(s, conv)
        s.seen[conv] = base
        self.by_session.setdefault(s.sid, {})[conv] = fill
        self.gate.stats["fills"] += 1
        return fill

    def _hold(self, fill: Fill, seq: int, data: bytes | None) -> None:
        if seq <= fill.session.seen[fill.conv] or seq in fill.held:
            return
        fill.held[seq] = data
        if data:
            fill.size += len(data)
            total = sum(f.size for f in self.by_session[fill.session.sid].values())
            fill.over = fill.over or total > self.max_bytes

    # -- asking the zone ------------------------------------------------------------------
    def _ask(self, fill: Fill) -> None:
        if not self._active(fill):
            return
        s = fill.session
        if s.closed or s.closing:
            self._end(fill)
            return
        self._purge(fill)
        if not fill.held:
            self._end(fill)
            return
        after = s.seen[fill.conv]
        limit = min(min(fill.held) - 1 - after, self.page)
        gate = self.gate
        self.by_req.pop(fill.req, None)
        fill.req = gate.new_id()
        fill.tries += 1
        self.by_req[fill.req] = fill
        gate.bus.send(gate.zone_of(fill.conv), Sync(gate.name, fill.req, s.user, fill.conv, after, limit))
        fill.timer = gevent.spawn_later(gate.conf.request_timeout, self._timed_out, fill, fill.req)

    def _timed_out(self, fill: Fill, req: int) -> None:
        if self.by_req.get(req) is not fill:
            return
        del self.by_req[req]
        fill.timer = None
        self._again_or_give_up(fill)

    def _again_or_give_up(self, fill: Fill, delay: float = 0.0) -> None:
        if fill.tries >= FILL_TRIES:
            self._give_up(fill)
        elif delay:
            fill.timer = gevent.spawn_later(delay, self._ask, fill)
        else:
            self._ask(fill)

    def answer(self, rep) -> bool:
        """A ``Rep``: True if it answers one of our fetches (the client never sees it)."""
        fill = self.by_req.pop(rep.req, None)
        if fill is None:
            return False
        self._cancel_timer(fill)
        if not self._active(fill):
            return True
        body = unpackb(rep.body)
        if body.get("t") != "history":
            if body.get("code") == "unavailable":
                self._again_or_give_up(fill, RETRY_AFTER)
            else:           # not_member now (left the group): nothing more to wait for
                self._give_up(fill)
            return True
        s, before = fill.session, fill.session.seen[fill.conv]
        self._purge(fill)
        for m in body.get("msgs") or ():
            seq = m.get("seq") if isinstance(m, dict) else None
            if isinstance(seq, int):
                self._hold(fill, seq, None if m.get("from") == s.user else s.encode(packb(m)))
        self._settle(fill)
        if self._active(fill):
            if s.seen[fill.conv] > before:
                fill.tries = 0
                self._ask(fill)
            else:           # the store has no such seqs (or cannot page to them)
                self._give_up(fill)
        return True

    # -- releasing ----------------------------------------------------------------------
    def _settle(self, fill: Fill) -> None:
        """Push what is next in line; give up past the hold bound; end a closed hole."""
        if fill.over:
            self._give_up(fill)
            return
        s, held = fill.session, fill.held
        seen, out = s.seen[fill.conv], []
        while seen + 1 in held:
            seen += 1
            data = self._drop(fill, seen)
            if data is not None:
                out.append(data)
        s.seen[fill.conv] = seen
        self._push(s, out)
        if not held:
            self._end(fill)

    def _give_up(self, fill: Fill) -> None:
        """Push what is held, in seq order, past the hole: the client syncs the rest."""
        if not self._active(fill):
            return
        s, out = fill.session, []
        seen = s.seen[fill.conv]
        for seq in sorted(fill.held):
            data = fill.held[seq]
            if seq > seen:
                seen = seq
                if data is not None:
                    out.append(data)
        s.seen[fill.conv] = seen
        fill.held.clear()
        self.gate.stats["fill_gave_up"] += 1
        self._push(s, out)
        self._end(fill)

    def _purge(self, fill: Fill) -> None:
        """Forget held seqs the session got meanwhile (pushed by a resume's replay)."""
        seen = fill.session.seen[fill.conv]
        for seq in [q for q in fill.held if q <= seen]:
            self._drop(fill, seq)

    def _drop(self, fill: Fill, seq: int):
        data = fill.held.pop(seq)
        if data:
            fill.size -= len(data)
        return data

    def _push(self, s, frames: list) -> None:
        if not frames:
            return
        queued = 0
        for data in frames:
            queued += s.queue(data)
        if queued:
            self.gate.frames_out += queued
            self.gate.stats["filled"] += queued
            self.gate.bus.record("out", s.sid, s.user, b"", queued)
            self.gate.mark_dirty(s)

    # -- bookkeeping ----------------------------------------------------------------------
    def _active(self, fill: Fill) -> bool:
        fills = self.by_session.get(fill.session.sid)
        return fills is not None and fills.get(fill.conv) is fill

    def _cancel_timer(self, fill: Fill) -> None:
        timer, fill.timer = fill.timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)

    def _end(self, fill: Fill) -> None:
        if not self._active(fill):
            return
        fills = self.by_session[fill.session.sid]
        del fills[fill.conv]
        if not fills:
            del self.by_session[fill.session.sid]
        if self.by_req.get(fill.req) is fill:
            del self.by_req[fill.req]
        self._cancel_timer(fill)
