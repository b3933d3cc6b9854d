"""A session's output: two queues bounded by ``gate.outbox_bytes``, and their policy.

- ``out``: replies and durable (DM, group) frames, in order. Past the bound the session
  is disconnected as ``slow`` (``on_slow``): nothing durable is ever dropped here, the
  rest comes from the cursor at the next login.
- ``live``: room and ``sys`` frames. Past the bound the oldest live frames drop first
  (counted in ``dropped``; the client sees the seq gap and may ``sync``).

Writes are non-blocking: ``send_some`` sends everything pending in one ``send()``, live
frames after the others, and keeps what did not fit frame by frame. ``head_left`` counts
the bytes of a frame already partly on the wire, which must go out whole first. No
greenlets here: the session drives it (``gate/session.py``).
"""
from __future__ import annotations

import collections


class Outbox:
    __slots__ = ("limit", "on_slow", "out", "out_bytes", "live", "live_bytes", "dropped",
                 "head_left")

    def __init__(self, limit: int, on_slow):
        self.limit = limit
        self.on_slow = on_slow          # called once the durable bound is hit
        self.out: list = []
        self.out_bytes = 0
        self.live: collections.deque = collections.deque()
        self.live_bytes = 0
        self.dropped = 0
        self.head_left = 0

    def __bool__(self) -> bool:
        return bool(self.out or self.live)

    # -- queueing -----------------------------------------------------------------------
    def queue(self, data: bytes) -> bool:
        """Append a durable frame; False (and ``on_slow``) past the bound."""
        if self.out_bytes + len(data) > self.limit and self.out_bytes:
            self.on_slow()
            return False
        self.out.append(data)
        self.out_bytes += len(data)
        return True

    def extend(self, frames: list) -> None:
        """Frames written at the socket's pace (offline replay): never counted as slow."""
        self.out.extend(frames)
        self.out_bytes += sum(len(f) for f in frames)

    def append_last(self, data: bytes) -> None:
        """A last frame (a kick, a close frame) after everything else, past the bound."""
        self.live_to_out()
        self.out.append(data)
        self.out_bytes += len(data)

    def queue_live(self, data: bytes) -> None:
        """A room/sys frame: past the bound the oldest live frames go."""
        self.live.append(data)
        self.live_bytes += len(data)
        while self.live_bytes > self.limit and len(self.live) > 1:
            self.live_bytes -= len(self.live.popleft())
            self.dropped += 1

    def live_to_out(self) -> None:
        if self.live:
            self.out.extend(self.live)
            self.out_bytes += self.live_bytes
            self.live.clear()
            self.live_bytes = 0

    def cut_to_whole_frames(self) -> None:
        """Before a last frame (kicked): drop the queue but finish a frame partly sent."""
        self.out = [self.out[0]] if self.head_left and self.out else []
        self.out_bytes = sum(len(p) for p in self.out)
        self.live.clear()
        self.live_bytes = 0

    def clear(self) -> None:
        self.out = []
        self.out_bytes = 0

    # -- writing ------------------------------------------------------------------------
    def send_some(self, sock) -> bool:
        """One non-blocking send of everything pending; True when all of it went out.
        OSError when the peer is gone."""
        self.live_to_out()
        parts = self.out
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            sent = sock.send(data, 0, 0.0)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            self.out, self.out_bytes, self.head_left = [], 0, 0
            return True
        self._keep_unsent(parts, sent)
        return False

    def _keep_unsent(self, parts: list, sent: int) -> None:
        k = 0
        while sent >= len(parts[k]):
            sent -= len(parts[k])
            k += 1
        if sent:
            self.head_left = len(parts[k]) - sent
        elif k:
            self.head_left = 0
        self.out = [parts[k][sent:], *parts[k + 1:]]
        self.out_bytes = sum(len(p) for p in self.out)

    def keep_live(self, frames: list, sent: int) -> None:
        """After a fast-path send of ``frames`` that took ``sent`` bytes: the part of a
        frame already on the wire must follow; whole frames left are live again."""
        k = 0
        while sent >= len(frames[k]):
            sent -= len(frames[k])
            k += 1
        if sent:
            self.out = [frames[k][sent:]]
            self.out_bytes = len(self.out[0])
            self.head_left = self.out_bytes
            k += 1
        for f in frames[k:]:
            self.queue_live(f)
