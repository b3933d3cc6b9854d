"""gate.ws and gate.http without a cluster: JSON conversion, decoding, origins, and a
WebSocket session on a socketpair spoken to by wsproto's own client side."""
import json
import socket

import msgpack
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Request, TextMessage

from cluster import config as config_mod
from cluster.codec import ProtocolError, packb
from cluster.config import GateConf, NodeSpec
from gate import http as gate_http
from gate import ws as gate_ws


# -- JSON and decoding ------------------------------------------------------------------
def test_json_text_plain_body():
    body = packb({"t": "msg", "conv": "d:a:b", "seq": 3, "body": {"x": [1, 2.5, None, True]}})
    assert json.loads(gate_ws.json_text(body)) == msgpack.unpackb(body)


def test_json_text_values_json_cannot_hold():
    body = packb({"t": "msg", "body": {1: b"raw", "f": float("nan"), "e": msgpack.ExtType(5, b"z")}})
    out = json.loads(gate_ws.json_text(body))
    assert out == {"t": "msg", "body": {"1": "raw", "f": None, "e": [5, "z"]}}


def test_decode_message_text_and_binary():
    msg, body = gate_ws.decode_message(b'{"t":"ping","rid":7}', text=True)
    assert msg == {"t": "ping", "rid": 7} and msgpack.unpackb(body) == msg
    raw = packb({"t": "ping"})
    assert gate_ws.decode_message(raw, text=False) == ({"t": "ping"}, raw)


@pytest.mark.parametrize("raw, text", [
    (b"", True), (b"", False), (b"[1]", True), (b'{"t": 1}', True),
    (b'{"t":"x","n":100000000000000000000000}', True), (packb([1]), False), (packb({"t": "x"}) + b"!", False),
])
def test_decode_message_refuses(raw, text):
    with pytest.raises(ProtocolError) as exc:
        gate_ws.decode_message(raw, text)
    assert exc.value.code == "bad_frame"


# -- origins ---------------------------------------------------------------------------------
def test_default_origins_are_the_gates_own():
    spec = NodeSpec(name="gate1", role="gate", host="127.0.0.1", tcp_port=1, ws_port=7701)
    ok = gate_http.origin_checker(gate_http.allowed_origins(spec, []))
    assert ok(b"http://127.0.0.1:7701") and ok(b"http://localhost:7701") and ok(b"HTTP://LocalHost:7701/")
    assert not ok(b"http://127.0.0.1:7702") and not ok(b"https://evil.example") and not ok(b"null")
    assert ok(None)                           # no Origin header: not a browser


def test_configured_and_named_host_origins():
    spec = NodeSpec(name="g", role="gate", host="10.1.2.3", tcp_port=1, ws_port=80)
    ok = gate_http.origin_checker(gate_http.allowed_origins(spec, ["https://play.example.com"]))
    assert ok(b"http://10.1.2.3:80") and ok(b"https://play.example.com")
    assert not ok(b"http://play.example.com")


OTHER_ROLES = {"login1": {"role": "login", "bus_port": 4}, "center1": {"role": "center", "bus_port": 5},
               "zone1": {"role": "zone", "bus_port": 6}, "dc1": {"role": "dc", "bus_port": 7},
               "log1": {"role": "log", "bus_port": 8}}
GATE1 = {"role": "gate", "host": "127.0.0.1", "bus_port": 1, "tcp_port": 7700, "ws_port": 7701}


def test_the_page_may_connect_to_the_other_gates_where_a_drain_moves_it():
    cfg = config_mod.from_dict({"nodes": {
        "gate1": GATE1,
        "gate2": {"role": "gate", "host": "127.0.0.1", "bus_port": 2, "tcp_port": 7710, "ws_port": 7711},
        "gate3": {"role": "gate", "host": "127.0.0.1", "bus_port": 3, "tcp_port": 7720, "ws_port": 7721,
                  "public_ws": "chat.example:443"},
        **OTHER_ROLES}})
    csp = dict(gate_http.page_headers(cfg, "gate1"))[b"content-security-policy"].decode()
    assert ("connect-src 'self' ws://127.0.0.1:7711 wss://127.0.0.1:7711 ws://chat.example:443 "
            "wss://chat.example:443;") in csp
    assert "7701" not in csp and "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    alone = config_mod.from_dict({"nodes": {"gate1": GATE1, **OTHER_ROLES}})
    assert gate_http.page_headers(alone, "gate1") == gate_http.HEADERS     # one gate: 'self' only


# -- a session on a socketpair -----------------------------------------------------------------
def upgrade_request(origin: str | None) -> bytes:
    client = WSConnection(ConnectionType.CLIENT)
    headers = [(b"origin", origin.encode())] if origin else []
    return client.send(Request(host="127.0.0.1", target="/ws", extra_headers=headers))


def read_events(sock, conn) -> list:
    conn.receive_data(sock.recv(65536))
    return list(conn.events())


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_handshake_accepts_and_refuses(pair):
    server, client = pair
    ws = gate_ws.handshake(server, upgrade_request("http://ok"), lambda o: o == b"http://ok")
    assert ws is not None and b"101" in client.recv(4096).split(b"\r\n")[0]
    assert gate_ws.handshake(server, upgrade_request("http://bad"), lambda o: False) is None
    head = client.recv(4096)
    assert head.startswith(b"HTTP/1.1 403") and head.endswith(b"origin not allowed\n")


def make_session(server) -> gate_ws.WsSession:
    ws = gate_ws.handshake(server, upgrade_request(None), lambda o: True)
    return gate_ws.WsSession(1, server, None, GateConf(), on_slow=lambda s: None, ws=ws)


def test_session_encodes_per_encoding_and_closes_last(pair):
    server, client = pair
    s = make_session(server)
    client.recv(4096)                                  # the 101
    peer = Connection(ConnectionType.CLIENT)
    record = packb({"t": "msg", "conv": "d:a:b", "seq": 1, "body": "hi"})
    s.queue(s.encode_cached(record, cache := {}))
    assert cache[False] == s.encode(record)            # one encoding per delivery, shared
    s.json = True
    s.queue(s.encode(record))
    s.queue(s.encode(packb({"t": "kicked", "reason": "slow"})))
    s.flush_blocking(1.0)
    events = []
    while not any(isinstance(e, CloseConnection) for e in events):
        events += read_events(client, peer)
    assert isinstance(events[0], BytesMessage) and msgpack.unpackb(events[0].data)["body"] == "hi"
    assert isinstance(events[1], TextMessage) and json.loads(events[1].data)["body"] == "hi"
    assert json.loads(events[2].data) == {"t": "kicked", "reason": "slow"}
    assert (events[3].code, events[3].reason) == (1008, "slow")
    assert s.encode(record) == b""                    # nothing more after our close


@pytest.mark.parametrize("kick, code", [
    ({"t": "kicked", "reason": "shutdown"}, 1001),
    ({"t": "kicked", "reason": "moving", "gates": [{"tcp": "127.0.0.1:7710", "ws": "127.0.0.1:7711"}],
      "retry_ms": 300}, 1001),                          # a draining gate: "going away", like shutdown
    ({"t": "kicked", "reason": "idle"}, 1008),
])
def test_a_kick_closes_with_its_code_and_reason(pair, kick, code):
    server, client = pair
    s = make_session(server)
    client.recv(4096)                                  # the 101
    peer = Connection(ConnectionType.CLIENT)
    s.queue(s.encode(packb(kick)))
    s.flush_blocking(1.0)
    events = []
    while not any(isinstance(e, CloseConnection) for e in events):
        events += read_events(client, peer)
    assert msgpack.unpackb(events[0].data) == kick
    assert (events[1].code, events[1].reason) == (code, kick["reason"])


def test_reject_event_for_a_non_upgrade(pair):
    server, client = pair
    raw = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
    assert gate_ws.handshake(server, raw, lambda o: True) is None
    assert client.recv(4096).startswith(b"HTTP/1.1 400")
