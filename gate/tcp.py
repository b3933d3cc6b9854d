"""The gate's TCP front: client connections without a greenlet each.

A greenlet per connection blocked in ``recv`` cost a sparse client (about one frame per
read) ~35 µs a message here: a Timeout armed per read, an extra ``recv`` that answers
EAGAIN, and two greenlet switches. Instead the event loop calls ``readable`` straight
from libev when a socket has data: one ``recv``, the frames handled, no switch. libev is
level-triggered, so a flooding client gets one read of ``READ_SIZE`` per loop turn and
cannot starve the others. Handlers run in the hub here and so must never block (they
only queue: replies, bus envelopes, greenlets for closes); a bug in one closes that
connection, as it would have ended its greenlet.

Timeouts (log in within ``login_timeout`` of connecting, then a frame at least every
``idle_timeout``) live on a wheel of ``STEP`` buckets: a read only stamps ``last_rx``;
``sweep`` looks at a session when its bucket comes due and re-files it if it was heard
from meanwhile, so each session costs the sweep about once per timeout, not per read.

A connection past ``gate.max_connections_per_ip`` from its address (TCP and WebSocket
counted together, ``gate.limits.AddressCounts``) gets one ``error{too_many_connections}``
frame and is closed at once: it never becomes a session.
"""
from __future__ import annotations

import logging
import time

import gevent
from gevent import socket as gsocket

from cluster.codec import frame
from cluster.replies import error
from gate.limits import address

log = logging.getLogger("zonechat.gate")

READ_SIZE = 4096            # bytes read per readable event: one connection pipelining small
                            # requests (a 40-byte join is ~100 per read) gets a turn, then the
                            # others do (the watcher is level-triggered: the rest waits in the
                            # socket for the next loop turn), so one flood cannot stall a gate
ACCEPT_BATCH = 256          # connections accepted per loop turn
STEP = 0.2                  # seconds per wheel bucket: timeouts fire up to this late
ACCEPT_RETRY = 0.1          # seconds to pause accepting after EMFILE and the like
TOO_MANY = frame(error("too_many_connections", "too many connections from your address"))


class TcpFront:
    """Listens on the gate's tcp_port and feeds each connection's bytes to the gate."""

    def __init__(self, gate, host: str, port: int, backlog: int = 4096):
        self.gate = gate
        self.loop = gevent.get_hub().loop
        self.listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
        self.listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(backlog)
        self.listener.settimeout(0.0)
        self.accepting = self.loop.io(self.listener.fileno(), 1)
        self.retry = None
        self.paused = False
        self.closed = False
        self.wheel: dict = {}       # bucket number -> sessions to look at then

    def start(self) -> None:
        self.accepting.start(self._accept)

    def close(self) -> None:
        """Stop listening (a drain or a stop): new connections are refused, open ones stay.
        Idempotent; accepting never resumes."""
        self.closed = True
        self.paused = False
        self.accepting.stop()
        if self.retry is not None:
            self.retry.stop()
        self.listener.close()

    # -- accepting ------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self.gate.sessions) >= self.gate.conf.max_connections:
                self._pause(None)       # resumed by a close (``room_freed``)
                return
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("accept failed: %s; pausing %.1fs", exc, ACCEPT_RETRY)
                self._pause(ACCEPT_RETRY)
                return
            self._open(sock, peer)

    def _pause(self, retry_in: float | None) -> None:
        self.accepting.stop()
        self.paused = True
        if retry_in is not None:
            self.retry = self.loop.timer(retry_in)
            self.retry.start(self.room_freed)

    def room_freed(self) -> None:
        """A connection closed (or a pause ran out): accept again if we had stopped."""
        if self.paused and not self.closed and len(self.gate.sessions) < self.gate.conf.max_connections:
            self.paused = False
            self.retry = None
            self.accepting.start(self._accept)

    def _open(self, sock, peer) -> None:
        sock.settimeout(0.0)
        if not self.gate.conns_per_ip.admit(address(peer)):   # released by close_session
            self._refuse(sock)
            return
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        s = self.gate.open_session(sock, peer)
        s.watcher = self.loop.io(sock.fileno(), 1)
        s.watcher.start(self._readable, s)
        self._file(s, s.login_by)

    def _refuse(self, sock) -> None:
        """Past ``gate.max_connections_per_ip``: one error frame (it fits any send buffer,
        so a non-blocking send is enough), then the close; no session is made."""
        self.gate.stats["refused_per_ip"] += 1
        try:
            sock.send(TOO_MANY)
            sock.shutdown(gsocket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    # -- reading --------------------------------------------------------------------------
    def _readable(self, s) -> None:
        if s.closing or s.closed:       # kicked meanwhile: read no more requests
            self._stop_reading(s)
            return
        try:
            data = s.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if not data:
                self.gate.close_session(s)
                return
            s.last_rx = time.monotonic()
            if not self.gate.ingest(s, data):
                self._stop_reading(s)
        except Exception:   # a bug must cost this connection, not the event loop
            log.exception("closing session %s after an error", s.sid)
            self.gate.close_session(s)

    def _stop_reading(self, s) -> None:
        """Closing: a close greenlet flushes and aborts (the abort ends the session);
        already closed: end it now."""
        if s.watcher is not None:
            s.watcher.stop()
        if s.closed:
            self.gate.close_session(s)

    # -- timeouts -------------------------------------------------------------------------
    def _file(self, s, deadline: float) -> None:
        self.wheel.setdefault(int(deadline / STEP) + 1, []).append(s)

    def sweep(self) -> None:
        """Kick sessions whose login or idle deadline passed; re-file the others."""
        now = time.monotonic()
        due = [k for k in self.wheel if k <= int(now / STEP)]
        for key in due:
            for s in self.wheel.pop(key):
                if s.closed or s.closing:
                    continue
                left = self.gate.time_left(s, now)
                if left <= 0:
                    self.gate.kick(s, "idle")
                else:
                    self._file(s, now + left)
