"""Passive viewers of rooms: one ``digest`` per window instead of a ``msg`` per message.

A session that joined a room with ``mode: "passive"`` is a member (it counts in
``members``) but is not a fan-out target (gate/rooms.py). Each room with passive viewers
keeps the newest ``chat.passive_recent`` messages the gate was given and the highest seq;
at most once per ``chat.passive_window`` (right away when the room was quiet for a
window) every passive viewer gets one digest covering exactly the seqs after the last one
it was given: ``digest{conv, from_seq, to_seq, count, recent}``, where from_seq is its
previous to_seq + 1 (the first: ``joined.last_seq`` + 1) and ``recent`` holds the newest
messages of that range. Viewers at the same position share one encoding, so a window
costs one encode and one write per viewer, whatever the message rate.

A viewer's position (``Session.passive[room]``) is None until its ``joined`` went out.
``focus`` (gate/handlers.py) takes the session out of here with its position, the start
of its backfill. Digests are room traffic: past a viewer's outbox bound they drop like
room messages.
"""
from __future__ import annotations

import collections
import time

import gevent

from cluster.codec import frame, pack_map_with_raw


class Digests:
    def __init__(self, gate):
        self.gate = gate
        chat = gate.config.chat
        self.window, self.keep = chat.passive_window, chat.passive_recent
        self.viewers: dict = {}      # room -> {sid: Session}
        self.recent: dict = {}       # room -> deque of (seq, record, sender), the newest `keep`
        self.top: dict = {}          # room -> highest seq given to this gate
        self.last: dict = {}         # room -> monotonic time of its last digest
        self.timers: dict = {}       # room -> the libev timer of its next digest
        self.sent = 0                # digests written (frames)

    def add(self, s, room: str) -> None:
        self.viewers.setdefault(room, {})[s.sid] = s
        s.passive[room] = None

    def placed(self, s, room: str, last_seq: int) -> None:
        """Its ``joined`` went out: digests start after ``last_seq``."""
        if room in s.passive and s.passive[room] is None:
            s.passive[room] = last_seq
            if self.top.get(room, 0) > last_seq and room not in self.timers:
                self._schedule(room)        # what came before its joined: in the next digest

    def remove(self, s, room: str):
        """The session is no longer passive in ``room``: its position (or None)."""
        viewers = self.viewers.get(room)
        if viewers is not None and viewers.pop(s.sid, None) is not None and not viewers:
            self.forget(room)
        return s.passive.pop(room, None)

    def forget(self, room: str) -> None:
        del self.viewers[room]
        for table in (self.recent, self.top, self.last):
            table.pop(room, None)
        timer = self.timers.pop(room, None)
        if timer is not None:
            timer.stop()

    def offer(self, room: str, seq: int, record: bytes, sender: str) -> None:
        """A room message this gate was given: into the room's window."""
        if room not in self.viewers:
            return
        recent = self.recent.get(room)
        if recent is None:
            recent = self.recent[room] = collections.deque(maxlen=self.keep)
        recent.append((seq, record, sender))
        self.top[room] = max(seq, self.top.get(room, 0))
        if room not in self.timers:
            self._schedule(room)

    def _schedule(self, room: str) -> None:
        wait = self.last.get(room, 0.0) + self.window - time.monotonic()
        timer = self.timers[room] = gevent.get_hub().loop.timer(max(0.0, wait))
        timer.start(self.flush, room)

    def flush(self, room: str) -> None:
        self.timers.pop(room, None)
        self.last[room] = time.monotonic()
        top, recent = self.top.get(room, 0), list(self.recent.get(room, ()))
        shared: dict = {}            # position -> [body, framed, {json: ws bytes}, sessions]
        for s in list(self.viewers.get(room, {}).values()):
            pos = s.passive.get(room)
            if pos is None or pos >= top or s.closed:
                continue
            if s.blocked and any(sender in s.blocked for _, _, sender in recent):
                body = self.body(room, pos, top, recent, s.blocked)
                s.queue_live(s.encode(body))
                self.written(body, 1)
            else:
                if pos not in shared:
                    body = self.body(room, pos, top, recent)
                    shared[pos] = [body, frame(body), {}, 0]
                entry = shared[pos]
                s.queue_live(entry[1] if s.tcp else s.encode_cached(entry[0], entry[2]))
                entry[3] += 1
            s.passive[room] = top
            self.gate.mark_dirty(s)
        for body, _framed, _ws, count in shared.values():
            self.written(body, count)

    def written(self, body: bytes, count: int) -> None:
        self.sent += count
        self.gate.frames_out += count
        self.gate.bus.record("out", None, None, body, count)

    @staticmethod
    def body(room: str, pos: int, top: int, recent: list, blocked=()) -> bytes:
        records = [record for seq, record, sender in recent if seq > pos and sender not in blocked]
        head = {"t": "digest", "conv": room, "from_seq": pos + 1, "to_seq": top, "count": top - pos}
        return pack_map_with_raw(head, "recent", records)
