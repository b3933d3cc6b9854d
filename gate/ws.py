"""WebSocket sessions (RFC 6455 through wsproto, sans-IO): same protocol v1 as TCP.

wsproto only turns bytes into events and events into bytes; the gate keeps driving the
socket itself, so a WebSocket session is a ``Session`` whose ``encode`` wraps a body in
a WebSocket message instead of a 4-byte length. Everything else — the outbox, the
once-per-tick flush, kicks, delivery, ``handlers.dispatch`` — is shared with TCP.

- One message = one body: binary = msgpack, text = JSON with the same keys. The session
  answers in the encoding of the first data message it received (binary before that).
- A message over ``gate.max_frame`` bytes, one that is no map with a string ``t``, and
  any WebSocket protocol violation get ``error{bad_frame}``, then a close frame
  (1009 too big, 1007 bad payload, or the code wsproto names) and the socket closes.
- A message nested more than ``gate.limits.MAX_DEPTH`` deep (JSON or msgpack) is
  ``bad_frame`` and 1007, as on TCP: decoding and re-encoding it would recurse.
- Pings are answered with pongs. A client close is answered with a close; our closes
  carry 1000 (logout), else the kick reason with 1001 (shutdown, moving) or 1008 (the others).
- Deadlines as TCP (``GateNode.time_left``): logged in within ``login_timeout`` of the
  connect, whatever arrives meanwhile (pings, unfinished fragments); once logged in, at
  most ``idle_timeout`` without a byte. Past one: ``kicked{idle}`` and close 1008.
- A connection past ``gate.max_connections_per_ip`` is upgraded only to be told so
  (``refuse``): ``error{too_many_connections}``, then close 1008.
"""
from __future__ import annotations

import json
import math
import time

import gevent
from gevent import socket as gsocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping,
                            RejectConnection, RejectData, Request, TextMessage)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from cluster.codec import ProtocolError, decode_body, decode_json, packb, unpackb
from cluster.replies import error
from gate import handlers
from gate.limits import MAX_DEPTH, too_deep
from gate.session import Session

READ_SIZE = 65536
OPEN = ConnectionState.OPEN
KICKED_MARK = b"\xa6kicked"             # msgpack "kicked": spots a kick body cheaply
# "going away" (1001): this gate stops (shutdown) or drains (moving: to another gate)
CLOSE_FOR_KICK = {"shutdown": CloseReason.GOING_AWAY, "moving": CloseReason.GOING_AWAY}


class WsSession(Session):
    """A client on a WebSocket: the outbox holds ready-to-send WebSocket frames."""

    __slots__ = ("ws", "decided", "parts", "part_bytes", "close_code", "close_reason")
    tcp = False

    def __init__(self, sid: int, sock, peer, gate_conf, on_slow, ws: WSConnection):
        super().__init__(sid, sock, peer, gate_conf, on_slow)
        self.ws = ws
        self.decided = False             # encoding fixed by the first data message
        self.parts: list = []            # fragments of the message being received
        self.part_bytes = 0
        self.close_code: int | None = None
        self.close_reason = ""

    def encode(self, body: bytes) -> bytes:
        """One server body as one WebSocket message (b"" once the socket is closing)."""
        if self.ws.state is not OPEN:
            return b""
        if KICKED_MARK in body[:16]:
            self._note_kick(body)
        if self.json:
            return bytes(self.ws.send(TextMessage(data=json_text(body))))
        return bytes(self.ws.send(BytesMessage(data=body)))

    def encode_cached(self, record: bytes, cache: dict) -> bytes:
        """``encode`` shared by every WebSocket recipient of one delivery (per encoding)."""
        data = cache.get(self.json)
        if data is None:
            data = self.encode(record)
            if data:
                cache[self.json] = data
        return data

    def _note_kick(self, body: bytes) -> None:
        try:
            msg = unpackb(body)
        except (ValueError, TypeError):
            return
        if not isinstance(msg, dict) or msg.get("t") != "kicked":
            return
        reason = str(msg.get("reason", ""))
        self.close_code = CLOSE_FOR_KICK.get(reason, CloseReason.POLICY_VIOLATION)
        self.close_reason = reason

    def flush_blocking(self, timeout: float = 2.0) -> None:
        """Before a close: our close frame goes out after everything queued."""
        if (self.closing or self.close_code is not None) and self.ws.state is OPEN:
            code = self.close_code or CloseReason.NORMAL_CLOSURE
            # after everything queued, live room frames included
            self.outbox.append_last(bytes(self.ws.send(CloseConnection(code=code, reason=self.close_reason))))
        super().flush_blocking(timeout)


# -- JSON for text sessions ------------------------------------------------------------
def json_text(body: bytes) -> str:
    """A msgpack body as JSON text; values JSON cannot hold become strings or null."""
    obj = unpackb(body)
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_json_default)
    except (TypeError, ValueError):
        return json.dumps(_jsonable(obj), separators=(",", ":"), ensure_ascii=False)


def _json_default(obj):
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(type(obj).__name__)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return None                          # msgpack ext types and the like


# -- the handshake -----------------------------------------------------------------------
def handshake(sock, raw: bytes, origin_ok) -> WSConnection | None:
    """Answer the upgrade request in ``raw``: 101, or 400/426/403 and None."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(raw)
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as exc:
        _reject(sock, ws, exc.event_hint or RejectConnection(), str(exc))
        return None
    if request is None:
        _reject(sock, ws, RejectConnection(), "incomplete upgrade request")
        return None
    origin = dict(request.extra_headers).get(b"origin")
    if not origin_ok(origin):
        _reject(sock, ws, RejectConnection(status_code=403), "origin not allowed")
        return None
    try:
        sock.sendall(ws.send(AcceptConnection()))
    except OSError:
        return None
    return ws


def refuse(sock, raw: bytes, origin_ok, code: str, reason: str) -> None:
    """Upgrade only to answer ``error{code}`` and close 1008 (a browser's WebSocket API
    shows no HTTP status, but it shows a message and a close reason)."""
    ws = handshake(sock, raw, origin_ok)
    if ws is None:
        return
    try:
        sock.sendall(ws.send(BytesMessage(data=error(code, reason)))
                     + ws.send(CloseConnection(code=CloseReason.POLICY_VIOLATION, reason=code)))
    except (OSError, LocalProtocolError):
        pass


def _reject(sock, ws: WSConnection, event: RejectConnection, text: str) -> None:
    body = (text + "\n").encode("utf-8")
    headers = [*event.headers, (b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    reject = RejectConnection(status_code=event.status_code, headers=headers, has_body=True)
    try:
        sock.sendall(ws.send(reject) + ws.send(RejectData(data=body, body_finished=True)))
    except OSError:
        pass


# -- the connection ----------------------------------------------------------------------
def serve(gate, sock, peer, raw: bytes, origin_ok, connected: float | None = None) -> None:
    """Run one WebSocket connection from its upgrade request to its close; ``connected``
    (monotonic): when the TCP connection came, where the login deadline starts."""
    ws = handshake(sock, raw, origin_ok)
    if ws is None:
        return
    sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    s = gate.open_session(sock, peer, WsSession, ws=ws)
    if connected is not None:
        s.login_by = min(s.login_by, connected + gate.conf.login_timeout)
    try:
        read_loop(gate, s)
        if s.closing:                    # error/kicked and our close frame go out first
            s.flush_blocking(timeout=1.0)
    finally:
        gate.close_session(s)


def read_loop(gate, s: WsSession) -> None:
    """Read until the session closes. Each read waits only until the session's deadline
    (``time_left``): bytes that do not log in do not move the login deadline."""
    sock = s.sock
    while not s.closing and not s.closed:
        left = gate.time_left(s, time.monotonic())
        if left <= 0:
            gate.kick(s, "idle")
            return
        sock.settimeout(left)
        try:
            data = sock.recv(READ_SIZE)
        except gsocket.timeout:
            continue                    # the deadline is checked again above
        except OSError:
            return
        s.last_rx = time.monotonic()
        if not data or not ingest(gate, s, data):
            return
        if len(data) == READ_SIZE:
            gevent.sleep(0)          # a flooding client must not starve the others


def ingest(gate, s: WsSession, data: bytes) -> bool:
    """Feed bytes to wsproto and act on its events; False once the session is closing."""
    try:
        s.ws.receive_data(data)
        for event in s.ws.events():
            on_event(gate, s, event)
            if s.closing or s.closed:
                return False
    except LocalProtocolError:           # the peer went on after the closing handshake
        gate.close_now(s)
        return False
    except ProtocolError as exc:
        if s.close_code is None:
            s.close_code = CloseReason.INVALID_FRAME_PAYLOAD_DATA
        s.close_reason = "bad_frame"
        gate.reply(s, error(exc.code, exc.reason))
        gate.close_now(s)
        return False
    return True


def on_event(gate, s: WsSession, event) -> None:
    if isinstance(event, (TextMessage, BytesMessage)):
        on_data(gate, s, event)
    elif isinstance(event, Ping):
        if s.ws.state is OPEN:           # after our close frame only a close may follow
            send_control(gate, s, s.ws.send(event.response()))
    elif isinstance(event, CloseConnection):
        on_close(gate, s, event)
    # Pong: we send no pings, so there is nothing to match it with.


def on_data(gate, s: WsSession, event) -> None:
    text = isinstance(event, TextMessage)
    if not s.decided:
        s.decided, s.json = True, text
    chunk = event.data.encode("utf-8") if text else event.data
    s.part_bytes += len(chunk)
    if s.part_bytes > gate.conf.max_frame:
        s.close_code = CloseReason.MESSAGE_TOO_BIG
        raise ProtocolError("bad_frame", f"message over {gate.conf.max_frame} bytes")
    s.parts.append(chunk)
    if not event.message_finished:
        return
    raw = s.parts[0] if len(s.parts) == 1 else b"".join(s.parts)
    s.parts, s.part_bytes = [], 0
    msg, body = decode_message(raw, text)
    gate.record_in(s, msg, body)
    handlers.dispatch(gate, s, msg)


def decode_message(raw: bytes, text: bool) -> tuple[dict, bytes]:
    """(the request map, its msgpack body) from one WebSocket message."""
    if not raw:
        raise ProtocolError("bad_frame", "empty message")
    if not text:
        msg = decode_body(raw)
        if too_deep(msg, len(raw)):
            raise _too_deep()
        return msg, raw
    try:
        msg = decode_json(raw.decode("utf-8"))
    except RecursionError:              # json.loads recurses: far too deep
        raise _too_deep() from None
    if too_deep(msg, len(raw)):
        raise _too_deep()
    try:
        return msg, packb(msg)          # JSON can hold what msgpack cannot (huge ints)
    except (OverflowError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_frame", f"value out of range: {exc}") from exc


def _too_deep() -> ProtocolError:
    return ProtocolError("bad_frame", f"nested more than {MAX_DEPTH} deep")


def on_close(gate, s: WsSession, event: CloseConnection) -> None:
    if s.ws.state is ConnectionState.REMOTE_CLOSING:      # the client closes: answer it
        send_control(gate, s, s.ws.send(event.response()))
        gate.close_now(s)
        return
    if s.ws.state is ConnectionState.CLOSED:              # the answer to our own close
        gate.close_now(s)
        return
    s.close_code = event.code              # wsproto reports a protocol violation as a close
    raise ProtocolError("bad_frame", event.reason or "WebSocket protocol error")


def send_control(gate, s: WsSession, data: bytes) -> None:
    if data and s.queue(bytes(data)):
        gate.mark_dirty(s)
