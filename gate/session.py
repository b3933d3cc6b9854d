"""A client session on a gate: its socket, its outbox (``gate/outbox.py``) and its
per-user limits.

Writes coalesce: ``queue`` only appends to the outbox; the gate flushes every dirty
session once at the end of the loop tick with one non-blocking ``send()`` of everything
pending. A partial write leaves the rest in the outbox and a ``drain`` greenlet waits for
the socket to become writable. What the session sees of the chat (seqs pushed, frames
held behind a replay or a join) is kept here too, and changed by the gate's delivery
side (``gate/delivery.py``, ``gate/rooms.py``).
"""
from __future__ import annotations

import collections
import functools
import time

import gevent
from gevent import socket as gsocket

from cluster.codec import FrameReader, frame
from gate.outbox import Outbox

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
        "sid", "sock", "peer", "user", "pending_user", "reader", "outbox",
        "dirty", "draining", "closed", "closing", "bucket", "failed", "seen", "held",
        "replaying", "inflight", "rooms", "json", "room_hold", "blocked", "room_floor",
        "watcher", "on_close", "login_by", "last_rx", "last_conv", "registers",
        "typed", "watching", "status", "read_sent", "presence_limit", "typing_limit", "passive",
        "focus_from",
    )
    tcp = True      # shared frame() bytes fit TCP sessions; gate.ws.WsSession sets False

    def __init__(self, sid: int, sock, peer, gate_conf, on_slow):
        self.sid = sid
        self.sock = sock
        self.peer = peer
        self.user: str | None = None
        self.pending_user: str | None = None     # a login for this user is in flight
        self.reader = FrameReader(gate_conf.max_frame)
        self.outbox = Outbox(gate_conf.outbox_bytes, functools.partial(on_slow, self))
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
        self.rooms: set = set()
        self.json = False
        self.room_hold: dict = {}     # room -> [(seq, data)] held until `joined` is sent
        self.blocked: set = set()
        self.room_floor: dict = {}    # room -> joined.last_seq until a later seq arrives
        self.watcher = None           # TCP: the libev read watcher (gate/tcp.py)
        self.on_close = None          # called once the socket is closed
        self.login_by = self.last_rx = 0.0
        self.last_conv = None         # the last conversation id a send passed the syntax check
        self.registers = None         # gate.limits.Window of this connection's registers, once asked
        self.typed: dict = {}         # conv -> loop time of the last typing passed on (gate/live.py)
        self.watching: list = []      # presence_sub list, sent again to a restarted center
        self.status = ("", False)     # (text, hidden) as the account keeps it
        self.read_sent: dict = {}     # conv -> the last read cursor pushed to the other members
        self.presence_limit = None    # gate.limits.Window of presence_sub + set_status, once asked
        self.passive: dict = {}       # room -> last seq covered (passive viewer: gate/rooms.py)
        self.typing_limit = None      # gate.limits.Window of typing over all conversations
        self.focus_from: dict = {}    # room -> passive position while its focus is answered

    # -- output -----------------------------------------------------------------------
    def encode(self, body: bytes) -> bytes:
        return frame(body)

    def queue(self, data: bytes) -> bool:
        """Append framed bytes; False (and the session is kicked as slow) past the bound."""
        if self.closed or self.closing:
            return False
        return self.outbox.queue(data)

    def queue_live(self, data: bytes) -> None:
        """Room and sys traffic: past the bound the oldest live frames go (a visible seq gap)."""
        if not (self.closed or self.closing):
            self.outbox.queue_live(data)

    @property
    def dropped(self) -> int:
        return self.outbox.dropped

    def idle(self) -> bool:
        """Nothing queued, nothing being written: the room fast path may write at once."""
        return not self.outbox and not self.draining and not self.closing

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
            self.outbox.keep_live(frames, sent)
            self.draining = True
            gevent.spawn(self._drain)
        return 1

    def flush(self) -> None:
        """One non-blocking send of everything pending; the rest waits for a drain."""
        self.dirty = False
        if self.closed or self.draining or not self.outbox:
            return
        try:
            if self.outbox.send_some(self.sock):
                return
        except OSError:
            self.abort()
            return
        self.draining = True
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while self.outbox and not self.closed:
                gsocket.wait_write(self.sock.fileno(), timeout=DRAIN_TIMEOUT)
                self.outbox.send_some(self.sock)
        except (OSError, gsocket.timeout):
            self.abort()
        finally:
            self.draining = False

    def flush_blocking(self, timeout: float = 2.0) -> None:
        """Write out everything now (before a close), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.outbox and not self.closed:
            try:
                if self.outbox.send_some(self.sock):
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

    def last_frame(self, data: bytes) -> None:
        """A goodbye (kicked slow): the queue goes, but a frame partly sent is finished."""
        self.outbox.cut_to_whole_frames()
        self.outbox.append_last(data)

    def abort(self) -> None:
        """Close the socket now (its read watcher first) and tell the gate."""
        if self.closed:
            return
        self.closed = True
        self.outbox.clear()
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
