"""Issue 11 ("Trust nobody on the wire"): the gate's abuse limits and the zone's group
work, over real TCP and WebSocket against a whole cluster.

The module's cluster has small limits (OVERRIDES). Every limit counted per client address
is tested from an address of its own in 127.0.0.0/8 (all of it reaches a gate on
127.0.0.1), so the tests do not count against each other; users are made through the
admin API (token accounts), not with ``register``, for the same reason.
"""
import json
import socket
import time
import uuid

import msgpack
import pytest
import websocket
from websocket import ABNF

from cluster.codec import packb
from dc import keys
from kit import WAIT, Raw, admin, fresh, redis_client, wait_for

CAP = 20
OVERRIDES = {
    "gate": {"max_connections_per_ip": CAP, "login_timeout": 2, "register_per_connection": 3,
             "register_per_ip": 5, "failed_logins_per_ip": 4, "max_rooms": 3},
    "chat": {"group_max_members": 5},
    "zone": {"group_work": 10},        # two group_creates of 4 members per zone tick
}


@pytest.fixture(scope="module")
def abuse(start_cluster):
    return start_cluster(OVERRIDES)


# -- connections from a chosen address -------------------------------------------------------
def tcp_from(addr, src: str) -> Raw:
    """A kit.Raw whose socket comes from ``src`` (its own connection from 127.0.0.1 is
    closed before anything is said on it)."""
    conn = Raw(addr)
    conn.sock.close()
    conn.sock = socket.create_connection(addr, timeout=WAIT, source_address=(src, 0))
    return conn


def ws_from(c, src: str, gate: str = "gate1") -> websocket.WebSocket:
    host, port = c.ws_addrs[gate]
    sock = socket.create_connection((host, port), timeout=WAIT, source_address=(src, 0))
    return websocket.create_connection(f"ws://{host}:{port}/ws", timeout=WAIT, socket=sock)


def ws_read(ws) -> dict:
    opcode, data = ws.recv_data()
    return msgpack.unpackb(data) if opcode == ABNF.OPCODE_BINARY else json.loads(data)


def ws_close_frame(ws) -> tuple[int, str]:
    """Read to the server's close frame: (code, reason). Frame by frame: the client's
    automatic answer to a close could meet a socket the server has closed already."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def users(c, count: int) -> dict:
    """``count`` fresh token accounts: {name: token}."""
    names = [fresh("ab") for _ in range(count)]
    admin(c, "/v1/users", {"users": names})
    return {n: admin(c, "/v1/token", {"user": n})["token"] for n in names}


def logged_in(c, name: str, token: str, gate: int = 0) -> Raw:
    conn = Raw(c.gates[gate])
    assert conn.login(name, token=token)["t"] == "welcome"
    return conn


def code_of(reply: dict):
    return reply.get("code") if reply.get("t") == "error" else reply.get("t")


# -- register and login limits ---------------------------------------------------------------
def test_register_past_the_limits_is_rate_limited_and_not_forwarded(abuse):
    r = redis_client(abuse)
    with tcp_from(abuse.gates[0], "127.0.0.11") as conn:
        for _ in range(2):                  # refused before a password hash: not counted
            assert code_of(conn.register(fresh("rg"), "short")) == "weak_password"
        for _ in range(3):
            assert conn.register(fresh("rg"))["t"] == "ok"
        late = fresh("rg")
        reply = conn.register(late)
        assert code_of(reply) == "rate_limited" and "connection" in reply["reason"], reply
        assert 0 < reply["retry_ms"] <= 60000
        assert not r.exists(keys.user(late))            # login never saw it
        assert conn.is_open()
    for _ in range(2):                      # 3 + 2 = the address's 5 (on this gate)
        with tcp_from(abuse.gates[0], "127.0.0.11") as conn:
            assert conn.register(fresh("rg"))["t"] == "ok"
    with tcp_from(abuse.gates[0], "127.0.0.11") as conn:
        reply = conn.register(late)
        assert code_of(reply) == "rate_limited" and "address" in reply["reason"], reply
        assert reply["retry_ms"] > 0 and not r.exists(keys.user(late))
    with tcp_from(abuse.gates[0], "127.0.0.12") as conn:  # another address has its own
        assert conn.register(late)["t"] == "ok"


def test_failed_logins_per_address_stop_reaching_login(abuse):
    [(name, token)] = users(abuse, 1).items()
    for _ in range(2):                      # 2 connections x 2: under the per-connection 10
        with tcp_from(abuse.gates[0], "127.0.0.13") as conn:
            for _ in range(2):
                assert code_of(conn.login(fresh("nobody"), "wrong-password")) == "auth_failed"
    with tcp_from(abuse.gates[0], "127.0.0.13") as conn:
        reply = conn.login(name, token=token)           # right, but from that address
        assert code_of(reply) == "rate_limited" and "address" in reply["reason"], reply
        assert reply["retry_ms"] > 0
    with tcp_from(abuse.gates[0], "127.0.0.14") as conn:
        assert conn.login(name, token=token)["t"] == "welcome"


# -- connections per address -----------------------------------------------------------------
def refused_tcp(c, src: str) -> None:
    with tcp_from(c.gates[0], src) as conn:
        got = conn.wait_closed()
    assert [code_of(b) for b in got] == ["too_many_connections"], got


def refused_ws(c, src: str) -> None:
    ws = ws_from(c, src)
    try:
        assert code_of(ws_read(ws)) == "too_many_connections"
        assert ws_close_frame(ws) == (1008, "too_many_connections")
    finally:
        ws.close()


def test_connections_past_the_cap_are_told_and_closed_on_tcp_and_websocket(abuse):
    src = "127.0.0.15"
    tcp = [tcp_from(abuse.gates[0], src) for _ in range(CAP // 2)]
    wss = [ws_from(abuse, src) for _ in range(CAP - CAP // 2)]
    try:
        for conn in tcp:                    # each one counted by the gate by now
            assert conn.request("ping")["t"] == "pong"
        for i, ws in enumerate(wss):
            ws.send(json.dumps({"t": "ping", "rid": i}))
            assert ws_read(ws)["t"] == "pong"
        refused_tcp(abuse, src)
        refused_ws(abuse, src)
        with tcp_from(abuse.gates[1], src) as other:
            assert other.is_open()                       # the cap is per gate
        with tcp_from(abuse.gates[0], "127.0.0.16") as other:
            assert other.is_open()                       # and per address
        tcp.pop().close()
        wss.pop().close()

        def one_more():
            conn = tcp_from(abuse.gates[0], src)
            tcp.append(conn)
            return conn.is_open(timeout=2)
        wait_for(one_more, "a connection again once one closed")
    finally:
        for conn in tcp:
            conn.close()
        for ws in wss:
            ws.close()


# -- WebSocket deadlines and bad input -------------------------------------------------------
def test_websocket_login_deadline_holds_despite_pings_and_fragments(abuse):
    ws = ws_from(abuse, "127.0.0.17")
    try:
        ws.send_frame(ABNF.create_frame('{"t":"pi', ABNF.OPCODE_TEXT, fin=0))   # never finished
        ws.settimeout(0.3)
        give_up = time.monotonic() + 10 * OVERRIDES["gate"]["login_timeout"]
        frame = None
        while time.monotonic() < give_up:       # a ping every 0.3 s until something else comes
            try:
                ws.ping(b"still here")
                frame = ws.recv_frame()
            except websocket.WebSocketTimeoutException:
                continue
            if frame.opcode != ABNF.OPCODE_PONG:
                break
        assert frame is not None and frame.opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY), frame
        body = json.loads(frame.data) if frame.opcode == ABNF.OPCODE_TEXT else msgpack.unpackb(frame.data)
        assert body == {"t": "kicked", "reason": "idle"}
        ws.settimeout(WAIT)
        assert ws_close_frame(ws) == (1008, "idle")
    finally:
        ws.close()


def test_over_deep_websocket_json_is_bad_frame_then_close(abuse):
    ws = ws_from(abuse, "127.0.0.18")
    try:
        ws.send('{"t":"send","rid":1,"conv":"sys","cid":"c","body":%s}' % ("[" * 5000 + "]" * 5000))
        reply = ws_read(ws)
        assert code_of(reply) == "bad_frame" and "deep" in reply["reason"], reply
        assert ws_close_frame(ws) == (1007, "bad_frame")
    finally:
        ws.close()


@pytest.mark.parametrize("depth", [100, 5000])
def test_over_deep_tcp_msgpack_is_bad_frame_then_close(abuse, depth):
    body = b"\x91" * depth + b"\xc0"           # [[[...nil...]]]
    request = b"\x83" + packb("t") + packb("ping") + packb("rid") + packb(1) + packb("x") + body
    with tcp_from(abuse.gates[0], "127.0.0.18") as conn:
        conn.write_raw(len(request).to_bytes(4, "big") + request)
        got = conn.wait_closed()
    assert [code_of(b) for b in got] == ["bad_frame"], got


# -- rooms and groups ------------------------------------------------------------------------
def test_rooms_per_session_are_capped(abuse):
    [(name, token)] = users(abuse, 1).items()
    with logged_in(abuse, name, token) as me:
        rooms = [f"r:{fresh('cap')}" for _ in range(4)]
        for room in rooms[:3]:
            assert me.request("join", room=room)["t"] == "joined"
        reply = me.request("join", room=rooms[3])
        assert code_of(reply) == "too_many_rooms", reply
        assert me.request("join", room=rooms[0])["t"] == "joined"     # one it is in: fine
        assert me.request("leave", room=rooms[1])["t"] == "ok"
        assert me.request("join", room=rooms[3])["t"] == "joined"


def test_group_members_are_checked_counted_and_collapsed(abuse):
    made = users(abuse, 6)
    owner, *others = made
    with logged_in(abuse, owner, made[owner]) as me:
        too_many = me.request("group_create", group=f"g:{fresh('big')}", members=others[:5])
        assert code_of(too_many) == "too_large", too_many
        huge = [f"g{i}" for i in range(8000)]          # 8,000 unknown names fit a frame
        assert code_of(me.request("group_create", group=f"g:{fresh('big')}", members=huge)) == "too_large"
        bad = me.request("group_create", group=f"g:{fresh('bad')}", members=[others[0], "no such name!"])
        assert code_of(bad) == "bad_request", bad
        group = f"g:{fresh('ok')}"
        dups = others[:4] * 3 + [owner]         # collapses to the owner and 4: the most
        assert me.request("group_create", group=group, members=dups)["t"] == "ok"
        assert code_of(me.request("group_add", group=group, user="bad name")) == "bad_request"
        full = me.request("group_add", group=group, user=others[4])
        assert code_of(full) == "too_large", full
        members = (rc := redis_client(abuse)).zrange(rc.layout.group_members(group), 0, -1)
        assert [m.decode() for m in members] == [owner, *others[:4]]


def test_unknown_members_are_no_such_user_and_nothing_is_made(abuse):
    made = users(abuse, 2)
    owner, friend = made
    ghost = fresh("ghost")
    group = f"g:{fresh('nsu')}"
    with logged_in(abuse, owner, made[owner]) as me:
        reply = me.request("group_create", group=group, members=[friend, ghost, fresh("ghost")])
        assert code_of(reply) == "no_such_user" and ghost in reply["reason"], reply
        assert not (rc := redis_client(abuse)).exists(rc.layout.group_info(group))
        assert me.request("group_create", group=group, members=[friend])["t"] == "ok"


def test_group_changes_past_a_tick_wait_in_order_with_their_sends(abuse):
    """group_work 10: a tick takes two of these creates; the others wait for later ticks,
    and a send to a group that is still waiting waits behind its create."""
    made = users(abuse, 5)
    owner, *others = made
    groups = [f"g:{fresh('tick')}" for _ in range(8)]
    with logged_in(abuse, owner, made[owner]) as me:
        creates = [me.begin("group_create", group=g, members=others) for g in groups]
        sends = [me.begin("send", conv=g, cid=uuid.uuid4().hex, body="first") for g in groups]
        assert [code_of(me.reply(rid)) for rid in creates] == ["ok"] * len(groups)
        acks = [me.reply(rid) for rid in sends]
        assert [(a["t"], a.get("seq")) for a in acks] == [("ack", 1)] * len(groups), acks
