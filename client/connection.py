"""One client TCP connection of protocol v1: framing, a receive greenlet, rid matching.

``client.Client`` owns one at a time (a new one per reconnect). Every decoded
body goes to ``on_body(body)`` first (the session's side effects and pushes), then, if it
carries the rid of a waiting request, to that request; ``on_read()`` runs after each
socket read. When the connection ends, for any reason, its waiting requests fail with
``ConnectionLost`` and ``on_lost(conn)`` runs once.
"""
from __future__ import annotations

import itertools
import logging
import socket

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from cluster.codec import MAX_SERVER_FRAME, FrameReader, ProtocolError, decode_body, encode_frame

RECV_SIZE = 65536

log = logging.getLogger("zonechat.client")


class ClientError(Exception):
    """An error reply (``code`` is its wire code, ``reply`` the body) or a transport failure."""

    def __init__(self, code: str, reason: str = "", reply: dict | None = None):
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code, self.reason, self.reply = code, reason, reply
        self.retry_ms = (reply or {}).get("retry_ms")

    @classmethod
    def from_reply(cls, reply: dict) -> "ClientError":
        return cls(str(reply.get("code")), str(reply.get("reason", "")), reply)


class RequestTimeout(ClientError):
    """No reply in time: the request may still take effect; resend a send with its cid."""

    def __init__(self, reason: str):
        super().__init__("timeout", reason)


class ConnectionLost(ClientError):
    """The connection is down: reconnect (or let the client do it) and retry."""

    def __init__(self, reason: str = "connection closed"):
        super().__init__("disconnected", reason)


class Connection:
    def __init__(self, addr: tuple[str, int], timeout: float, counters: dict, spawn, source,
                 on_body, on_read, on_lost):
        self.addr, self.timeout, self.counters, self.spawn = addr, timeout, counters, spawn
        self.source = None if source is None else (source, 0)
        self.on_body, self.on_read, self.on_lost = on_body, on_read, on_lost
        self.alive = False
        self._sock = None
        self._reader = FrameReader(MAX_SERVER_FRAME)
        self._waiters: dict[int, AsyncResult] = {}
        self._rids = itertools.count(1)
        self._wlock = Semaphore()

    def open(self) -> "Connection":
        try:
            sock = socket.create_connection(self.addr, timeout=self.timeout, source_address=self.source)
        except OSError as exc:
            raise ClientError("connect_failed", f"{self.addr[0]}:{self.addr[1]}: {exc}") from exc
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self.alive = sock, True
        self.spawn(self._receive_listener)
        return self

    def close(self) -> None:
        """End the connection (idempotent): fail waiting requests, then ``on_lost``."""
        if not self.alive:
            return
        self.alive = False
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            if not waiter.ready():
                waiter.set_exception(ConnectionLost())
        self.on_lost(self)

    def write(self, obj: dict) -> None:
        if not self.alive:
            raise ConnectionLost("not connected")
        data = encode_frame(obj)
        try:
            with self._wlock:                       # one frame at a time on the socket
                self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionLost(str(exc)) from exc

    def begin(self, t: str, fields: dict) -> tuple[int, AsyncResult]:
        """Write a request with a fresh rid; ``wait`` for its reply later (pipelining)."""
        rid = next(self._rids)
        waiter = self._waiters[rid] = AsyncResult()
        try:
            self.write({"t": t, "rid": rid, **fields})
        except ConnectionLost:
            self._waiters.pop(rid, None)
            raise
        return rid, waiter

    def wait(self, rid: int, waiter: AsyncResult, timeout: float | None = None) -> dict:
        try:
            waiter.wait(self.timeout if timeout is None else timeout)
            if not waiter.ready():
                raise RequestTimeout(f"no reply to rid {rid}")
            return waiter.get()
        finally:
            self._waiters.pop(rid, None)

    def request(self, t: str, timeout: float | None = None, **fields) -> dict:
        return self.wait(*self.begin(t, fields), timeout)

    def _receive_listener(self) -> None:
        try:
            while True:
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    return
                for body in self._reader.feed(data):
                    self._handle(decode_body(body))
                self.on_read()
                if len(data) == RECV_SIZE:
                    gevent.sleep(0)                 # recv does not yield while data waits
        except ProtocolError as exc:
            self.counters["bad_frames"] += 1
            log.warning("bad frame from %s:%s: %s", *self.addr, exc.reason)
        except OSError:
            pass
        finally:
            self.close()

    def _handle(self, body: dict) -> None:
        self.on_body(body)
        rid = body.get("rid")
        if rid is None:
            return
        waiter = self._waiters.pop(rid, None) if isinstance(rid, int) else None
        if waiter is not None:
            waiter.set(body)
        else:
            self.counters["late_replies"] += 1
