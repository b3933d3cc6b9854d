"""A client session on a gate: its socket, its bounded outbox and its per-user limits.

Writes coalesce: ``push`` only appends to the outbox; the gate flushes every dirty
session once at the end of the loop tick with one non-blocking ``send()`` of everything
pending. A partial write leaves the rest in the outbox and a ``drain`` greenlet waits for
the socket to become writable. Outbox policy at ``outbox_bytes``: live room/sys frames
drop the oldest live frames (counted); anything else disconnects the session as ``slow``.
"""
from __future__ import annotations

import collections
import time

import gevent
from gevent import socket as gsocket

from cluster.codec import FrameReader, frame

DRAIN_TIMEOUT = 30.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class WindowCounter:
    """Events within the last ``window`` seconds (failed logins on a connection)."""

    __slots__ = ("window", "stamps")

    def __init__(self, window: float):
        self.window = window
        self.stamps: collections.deque = collections.deque()

    def add(self, now: float | None = None) -> None:
        self.stamps.append(time.monotonic() if now is None else now)

    def count(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        while self.stamps and now - self.stamps[0] > self.window:
            self.stamps.popleft()
        return len(self.stamps)


class Session:
    __slots__ = (
        "sid", "sock", "peer", "user", "pending_user", "reader", "out", "out_bytes",
        "dirty", "draining", "closed", "closing", "bucket", "failed", "seen", "held",
        "replaying", "inflight", "limit", "on_slow", "rooms", "json",
        "live", "live_bytes", "dropped", "room_hold", "blocked", "head_left", "room_floor",
        "watcher", "on_close", "login_by", "last_rx", "last_conv",
    )
    tcp = True      # shared frame() bytes fit TCP sessions; gate.ws.WsSession sets False

    def __init__(self, sid: int, sock, peer, gate_conf, on_slow):
        self.sid = sid
        self.sock = sock
        self.peer = peer
        self.user: str | None = None
        self.pending_user: str | None = None     # a login for this user is in flight
        self.reader = FrameReader(gate_conf.max_frame)
        self.out: list = []
        self.out_bytes = 0
        self.dirty = False
        self.draining = False
        self.closed = False
        self.closing = False
        self.bucket = TokenBucket(gate_conf.send_rate, gate_conf.send_burst)
        self.failed = WindowCounter(60.0)
        self.seen: dict = {}          # conv -> highest seq pushed (DMs and groups)
        self.held: list | None = None  # live frames held back while offline replay runs
        self.replaying = False
        self.inflight = 0
        self.limit = gate_conf.outbox_bytes
        self.on_slow = on_slow
        self.rooms: set = set()
        self.json = False
        self.live: collections.deque = collections.deque()   # room/sys frames: drop-oldest
        self.live_bytes = 0
        self.dropped = 0
        self.room_hold: dict = {}     # room -> [(seq, data)] held until `joined` is sent
        self.blocked: set = set()
        self.head_left = 0            # bytes of a partly sent frame at the head of `out`
        self.room_floor: dict = {}    # room -> joined.last_seq until a later seq arrives
        self.watcher = None           # TCP: the libev read watcher (gate/tcp.py)
        self.on_close = None          # called once the socket is closed
        self.login_by = self.last_rx = 0.0
        self.last_conv = None         # the last conversation id a send passed the syntax check

    # -- output -----------------------------------------------------------------------
    def encode(self, body: bytes) -> bytes:
        return frame(body)

    def queue(self, data: bytes) -> bool:
        """Append framed bytes; False (and the session is kicked as slow) past the bound."""
        if self.closed or self.closing:
            return False
        if self.out_bytes + len(data) > self.limit and self.out_bytes:
            self.on_slow(self)
            return False
        self.out.append(data)
        self.out_bytes += len(data)
        return True

    def queue_live(self, data: bytes) -> None:
        """Room and sys traffic: past the bound the oldest live frames go (a visible seq gap)."""
        if self.closed or self.closing:
            return
        self.live.append(data)
        self.live_bytes += len(data)
        while self.live_bytes > self.limit and len(self.live) > 1:
            self.live_bytes -= len(self.live.popleft())
            self.dropped += 1

    def _send_some(self) -> bool:
        """One non-blocking send of everything pending (replies and durable frames first,
        then live frames); True when all of it went out. OSError when the peer is gone."""
        if self.live:
            self.out.extend(self.live)
            self.live.clear()
            self.live_bytes = 0
        parts = self.out
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            sent = self.sock.send(data, 0, 0.0)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            self.out, self.out_bytes, self.head_left = [], 0, 0
            return True
        self._keep_unsent(parts, sent)
        return False

    def _keep_unsent(self, parts: list, sent: int) -> None:
        """Keep what was not sent, frame by frame; ``head_left`` counts the bytes of a frame
        already partly on the wire, which must go out whole before anything else."""
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

    def send_now(self, data: bytes, frames: list) -> int:
        """Room fast path: ``data`` (= ``frames`` joined) straight to the socket; what does
        not fit stays queued, frame by frame, for a drain. 1 when the session took it."""
        try:
            sent = self.sock.send(data, 0, 0.0)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return 0
        if sent < len(data):
            self._keep_live(frames, sent)
            self.draining = True
            gevent.spawn(self._drain)
        return 1

    def _keep_live(self, frames: list, sent: int) -> None:
        """The part of a frame already on the wire must follow; whole frames left over are
        live traffic again (droppable, oldest first)."""
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

    def flush(self) -> None:
        """One non-blocking send of everything pending; the rest waits for a drain."""
        self.dirty = False
        if self.closed or self.draining or not (self.out or self.live):
            return
        try:
            if self._send_some():
                return
        except OSError:
            self.abort()
            return
        self.draining = True
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while (self.out or self.live) and not self.closed:
                gsocket.wait_write(self.sock.fileno(), timeout=DRAIN_TIMEOUT)
                self._send_some()
        except (OSError, gsocket.timeout):
            self.abort()
        finally:
            self.draining = False

    def flush_blocking(self, timeout: float = 2.0) -> None:
        """Write out everything now (before a close), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while (self.out or self.live) and not self.closed:
            try:
                if self._send_some():
                    return
            except OSError:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                gsocket.wait_write(self.sock.fileno(), timeout=left)
            except gsocket.timeout:
                return

    def cut_to_whole_frames(self) -> None:
        """Before a last frame (kicked): drop the queue but finish a frame partly sent."""
        self.out = [self.out[0]] if self.head_left and self.out else []
        self.out_bytes = sum(len(p) for p in self.out)
        self.live.clear()
        self.live_bytes = 0

    def abort(self) -> None:
        """Close the socket now (its read watcher first) and tell the gate."""
        if self.closed:
            return
        self.closed = True
        self.out = []
        self.out_bytes = 0
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        try:
            self.sock.shutdown(gsocket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.on_close is not None:
            self.on_close(self)
