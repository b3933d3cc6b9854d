"""WebSocket on the gates, driven by the third-party ``websocket-client`` (no code of ours),
against a whole cluster run by the supervisor, next to TCP clients (client.Client).

The module's cluster has short login/idle timeouts and one configured extra origin.
"""
import http.client
import itertools
import json
import os
import signal
import struct

import msgpack
import pytest
import websocket
from websocket import ABNF

from cluster import admin as admin_cli
from client import Client, dm_conv

EXTRA_ORIGIN = "http://game.example"
OVERRIDES = {"gate": {"login_timeout": 2, "idle_timeout": 3, "ws_origins": [EXTRA_ORIGIN]}}
PASSWORD = "password123"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def ws_cluster(start_cluster):
    return start_cluster(OVERRIDES)


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_names)}"


def url(c, gate: str = "gate1") -> str:
    host, port = c.ws_addrs[gate]
    return f"ws://{host}:{port}/ws"


def ws_connect(c, gate="gate1", **options) -> websocket.WebSocket:
    return websocket.create_connection(url(c, gate), timeout=10, **options)


def call(ws, body: dict, binary: bool = False) -> dict:
    """Send one request and read until the reply with its rid; pushes are kept on ws.pushes."""
    if binary:
        ws.send_binary(msgpack.packb(body))
    else:
        ws.send(json.dumps(body))
    while True:
        reply = read(ws)
        if reply.get("rid") == body.get("rid"):
            return reply
        ws.__dict__.setdefault("pushes", []).append(reply)


def read(ws) -> dict:
    opcode, data = ws.recv_data()
    return msgpack.unpackb(data) if opcode == ABNF.OPCODE_BINARY else json.loads(data)


def next_push(ws, t: str) -> dict:
    for i, body in enumerate(getattr(ws, "pushes", [])):
        if body.get("t") == t:
            return ws.pushes.pop(i)
    while True:
        body = read(ws)
        if body.get("t") == t:
            return body


def ws_user(c, user: str, gate="gate1", register=True, binary=False):
    ws = ws_connect(c, gate)
    if register:
        assert call(ws, {"t": "register", "rid": 1, "user": user, "password": PASSWORD}, binary)["t"] == "ok"
    welcome = call(ws, {"t": "login", "rid": 2, "user": user, "password": PASSWORD, "v": 1}, binary)
    assert welcome["t"] == "welcome", welcome
    return ws


def tcp_user(c, user: str, gate="gate2", register=True) -> Client:
    host, port = c.gate_addrs[gate]
    client = Client(host, port, timeout=10, ping_interval=1).connect()
    if register:
        client.register(user, PASSWORD)
    client.login(user, PASSWORD)
    return client


def close_frame(ws) -> tuple[int, str]:
    """Read to the server's close frame: (code, reason)."""
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
            return code, frame.data[2:].decode("utf-8", "replace")


# -- chat across transports ---------------------------------------------------------------
def test_websocket_client_chats_with_tcp_client(ws_cluster):
    a, b = fresh("wa"), fresh("tb")
    tcp = tcp_user(ws_cluster, b)
    ws = ws_user(ws_cluster, a)
    conv = dm_conv(a, b)
    ack = call(ws, {"t": "send", "rid": 3, "conv": conv, "cid": "c1", "body": "hi from ws"})
    assert ack["t"] == "ack" and ack["seq"] == 1
    got = tcp.expect("msg", timeout=10, conv=conv)
    assert (got["from"], got["body"], got["seq"]) == (a, "hi from ws", 1)
    tcp.send(conv, {"text": "hi from tcp", "n": [1, 2]})
    msg = next_push(ws, "msg")
    assert (msg["from"], msg["body"], msg["seq"]) == (b, {"text": "hi from tcp", "n": [1, 2]}, 2)
    again = call(ws, {"t": "send", "rid": 4, "conv": conv, "cid": "c1", "body": "hi from ws"})
    assert again["seq"] == 1                 # a resent cid gets its first ack, nothing new
    history = call(ws, {"t": "sync", "rid": 5, "conv": conv, "after": 0})
    assert [m["seq"] for m in history["msgs"]] == [1, 2]
    ws.close()
    tcp.close()


def test_two_websockets_on_two_gates_binary_and_text(ws_cluster):
    a, b = fresh("wa"), fresh("wb")
    wa = ws_user(ws_cluster, a, "gate1", binary=True)
    wb = ws_user(ws_cluster, b, "gate2")
    conv = dm_conv(a, b)
    assert call(wa, {"t": "send", "rid": 3, "conv": conv, "cid": "x", "body": "bin"}, True)["t"] == "ack"
    assert next_push(wb, "msg")["body"] == "bin"
    assert call(wb, {"t": "send", "rid": 3, "conv": conv, "cid": "y", "body": "txt"})["t"] == "ack"
    opcode, data = wa.recv_data()
    assert opcode == ABNF.OPCODE_BINARY and msgpack.unpackb(data)["body"] == "txt"
    wa.close()
    wb.close()


def test_answers_in_the_encoding_used_first(ws_cluster):
    ws = ws_connect(ws_cluster)
    ws.send_binary(msgpack.packb({"t": "ping", "rid": 1}))
    ws.send(json.dumps({"t": "ping", "rid": 2}))
    for rid in (1, 2):
        opcode, data = ws.recv_data()
        assert opcode == ABNF.OPCODE_BINARY and msgpack.unpackb(data)["rid"] == rid
    ws.close()
    ws = ws_connect(ws_cluster)
    ws.send(json.dumps({"t": "ping", "rid": 1}))
    ws.send_binary(msgpack.packb({"t": "ping", "rid": 2}))
    for rid in (1, 2):
        opcode, data = ws.recv_data()
        assert opcode == ABNF.OPCODE_TEXT and json.loads(data) == {"t": "pong", "rid": rid, "ts": json.loads(data)["ts"]}
    ws.close()


def test_room_message_and_broadcast_reach_websocket(ws_cluster):
    a, b = fresh("wa"), fresh("tb")
    room = f"r:{fresh('hall')}"
    ws = ws_user(ws_cluster, a)
    tcp = tcp_user(ws_cluster, b)
    joined = call(ws, {"t": "join", "rid": 3, "room": room})
    assert joined["t"] == "joined" and joined["conv"] == room
    tcp.join(room)
    tcp.send(room, "room hello")
    msg = next_push(ws, "msg")
    assert (msg["conv"], msg["body"], msg["from"]) == (room, "room hello", b)
    sent = admin_cli.call(ws_cluster.cfg, "/v1/broadcast", {"text": "maintenance at noon"})
    sys_msg = next_push(ws, "msg")
    assert (sys_msg["conv"], sys_msg["seq"], sys_msg["body"]) == ("sys", sent["seq"], "maintenance at noon")
    ws.close()
    tcp.close()


def test_offline_messages_are_replayed_over_websocket(ws_cluster):
    a, b = fresh("wa"), fresh("tb")
    ws = ws_user(ws_cluster, a, binary=True)
    ws.close()
    tcp = tcp_user(ws_cluster, b)
    conv = dm_conv(a, b)
    for i in range(3):
        tcp.send(conv, f"while away {i}")
    ws = ws_user(ws_cluster, a, register=False, binary=True)
    got = [next_push(ws, "msg") for _ in range(3)]
    assert [(m["seq"], m["body"]) for m in got] == [(i + 1, f"while away {i}") for i in range(3)]
    ws.close()
    tcp.close()


# -- sessions -------------------------------------------------------------------------------
def test_login_on_tcp_replaces_the_websocket_session(ws_cluster):
    a = fresh("wa")
    ws = ws_user(ws_cluster, a)
    tcp = tcp_user(ws_cluster, a, register=False)
    assert next_push(ws, "kicked")["reason"] == "session_replaced"
    assert close_frame(ws) == (1008, "session_replaced")
    tcp.close()


def test_logout_closes_normally(ws_cluster):
    ws = ws_user(ws_cluster, fresh("wa"))
    assert call(ws, {"t": "logout", "rid": 9}) == {"t": "ok", "rid": 9}
    assert close_frame(ws)[0] == 1000


def test_idle_connection_is_kicked(ws_cluster):
    ws = ws_connect(ws_cluster)                 # login_timeout 2 s in this module
    assert read(ws) == {"t": "kicked", "reason": "idle"}
    assert close_frame(ws) == (1008, "idle")
    ws = ws_user(ws_cluster, fresh("wa"))       # idle_timeout 3 s once logged in
    assert next_push(ws, "kicked")["reason"] == "idle"


def test_ping_pong_and_client_close(ws_cluster):
    ws = ws_connect(ws_cluster)
    ws.ping(b"are you there")
    opcode, frame = ws.recv_data_frame(True)
    assert opcode == ABNF.OPCODE_PONG and frame.data == b"are you there"
    ws.send_close(1000, b"bye")
    assert close_frame(ws) == (1000, "bye")


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("send, code", [
    (lambda ws: ws.send("{not json"), 1007),
    (lambda ws: ws.send(json.dumps([1, 2])), 1007),
    (lambda ws: ws.send(json.dumps({"x": 1})), 1007),
    (lambda ws: ws.send(json.dumps({"t": "send", "body": 10 ** 30})), 1007),
    (lambda ws: ws.send_binary(msgpack.packb({"t": "ping"}) + b"\x00"), 1007),
    (lambda ws: ws.send_binary(msgpack.packb({1: 2, "t": "ping"})), 1007),
    (lambda ws: ws.send_binary(b""), 1007),
    (lambda ws: ws.send_binary(b"x" * 65537), 1009),
    (lambda ws: ws.send("é" * 40000), 1009),
])
def test_bad_frames_get_bad_frame_then_close(ws_cluster, send, code):
    ws = ws_connect(ws_cluster)
    send(ws)
    error = read(ws)
    assert (error["t"], error["code"]) == ("error", "bad_frame"), error
    assert close_frame(ws) == (code, "bad_frame")


def test_websocket_protocol_violation_is_bad_frame(ws_cluster):
    ws = ws_connect(ws_cluster)
    ws.send(json.dumps({"t": "ping", "rid": 1}))
    assert read(ws)["t"] == "pong"
    ws.sock.sendall(b"\x81\x05hello")          # an unmasked client frame: RFC 6455 5.1
    assert read(ws)["code"] == "bad_frame"
    assert close_frame(ws)[0] == 1002


def test_unknown_type_and_auth_required_keep_the_connection(ws_cluster):
    ws = ws_connect(ws_cluster)
    assert call(ws, {"t": "dance", "rid": 1})["code"] == "unknown_type"
    assert call(ws, {"t": "send", "rid": 2, "conv": "sys", "cid": "c", "body": 1})["code"] == "auth_required"
    assert call(ws, {"t": "ping", "rid": 3})["t"] == "pong"
    ws.close()


# -- origins and HTTP -----------------------------------------------------------------------
def test_origin_allow_list(ws_cluster):
    port = ws_cluster.ws_addrs["gate1"][1]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", EXTRA_ORIGIN):
        ws = ws_connect(ws_cluster, origin=origin)
        assert call(ws, {"t": "ping", "rid": 1})["t"] == "pong"
        ws.close()
    ws = ws_connect(ws_cluster, suppress_origin=True)      # not a browser: no Origin at all
    assert call(ws, {"t": "ping", "rid": 1})["t"] == "pong"
    ws.close()
    other = ws_cluster.ws_addrs["gate2"][1]
    for origin in ("http://evil.example", f"http://127.0.0.1:{other}", "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(ws_cluster, origin=origin)
        assert refused.value.status_code == 403


def http_get(c, path: str, method: str = "GET", gate: str = "gate1"):
    conn = http.client.HTTPConnection(*c.ws_addrs[gate], timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_the_chat_page_is_served(ws_cluster):
    status, headers, body = http_get(ws_cluster, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="/app.js">' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    for path, ctype in (("/app.js", "text/javascript"), ("/client.js", "text/javascript"),
                        ("/errors.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = http_get(ws_cluster, path)
        assert status == 200 and headers["content-type"].startswith(ctype) and body
    status, headers, body = http_get(ws_cluster, "/", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert http_get(ws_cluster, "/secret.txt")[0] == 404
    assert http_get(ws_cluster, "/../gate/node.py")[0] == 404
    assert http_get(ws_cluster, "/", "POST")[0] == 405
    assert http_get(ws_cluster, "/ws")[0] == 400          # no Upgrade header


def test_fragmented_message_with_a_ping_between(ws_cluster):
    ws = ws_connect(ws_cluster)
    text = json.dumps({"t": "ping", "rid": 77})
    ws.send_frame(ABNF.create_frame(text[:5], ABNF.OPCODE_TEXT, fin=0))
    ws.send_frame(ABNF.create_frame(b"mid", ABNF.OPCODE_PING))
    ws.send_frame(ABNF.create_frame(text[5:12], ABNF.OPCODE_CONT, fin=0))
    ws.send_frame(ABNF.create_frame(text[12:], ABNF.OPCODE_CONT, fin=1))
    opcode, frame = ws.recv_data_frame(True)
    assert opcode == ABNF.OPCODE_PONG and frame.data == b"mid"
    assert read(ws)["rid"] == 77
    ws.close()


def test_gate_shutdown_kicks_websockets_with_going_away(ws_cluster):
    ws = ws_user(ws_cluster, fresh("wa"))
    old = ws_cluster.kill("gate1", signal.SIGTERM)
    assert next_push(ws, "kicked")["reason"] == "shutdown"
    assert close_frame(ws) == (1001, "shutdown")
    ws_cluster.wait_ready("gate1", old_pid=old)
