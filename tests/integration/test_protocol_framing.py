"""Issue 2, point 5: framing and every bad-input rule of protocol v1, over real TCP against a
whole cluster run by the real supervisor (PROTOCOL.md "Transport and framing", "Client →
server", the send check order, and guarantee 7 "Limits answer" for send rate and size).

One module cluster (default config: max_frame 65536, body_max 4096, 20 sends/s burst 40);
every test uses fresh user names. ``kit.Raw`` writes exactly the bytes given and shows
every body the server sends.
"""
import struct

import msgpack
import pytest

from cluster.codec import encode_frame, frame
from cluster.convs import dm
from dc import keys
from kit import PASSWORD, Raw, Users, fresh, redis_client, register, stored_seqs

MAX_FRAME = 65536


def pk(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


BAD_FRAMES = {
    "zero_length": b"\x00\x00\x00\x00",
    "length_over_max_frame": struct.pack(">I", MAX_FRAME + 1),
    "length_4GiB": b"\xff\xff\xff\xff",
    "not_msgpack": frame(b"\xc1"),
    "truncated_msgpack": frame(b"\x82\xa1t\xa4ping"),
    "invalid_utf8_string": frame(b"\x81\xa1t\xa2\xff\xfe"),
    "not_a_map_list": frame(pk([1, 2])),
    "not_a_map_string": frame(pk("ping")),
    "not_a_map_int": frame(pk(7)),
    "no_t": frame(pk({"rid": 1})),
    "t_not_string_int": frame(pk({"t": 5, "rid": 1})),
    "t_is_nil": frame(pk({"t": None, "rid": 1})),
    "t_is_binary": frame(pk({"t": b"ping", "rid": 1})),
    "non_string_key": frame(pk({"t": "ping", "rid": 1, 1: "x"})),
    "non_string_key_nested_t_ok": frame(pk({"t": "ping", (1, 2): 3})),
    "trailing_bytes_int": frame(pk({"t": "ping", "rid": 1}) + pk(1)),
    "trailing_byte_zero": frame(pk({"t": "ping", "rid": 1}) + b"\x00"),
    "two_maps_in_one_frame": frame(pk({"t": "ping", "rid": 1}) + pk({"t": "ping", "rid": 2})),
}


def assert_bad_frame_then_closed(conn: Raw, before=()) -> None:
    """The next bodies: ``before`` (types), one error{bad_frame} without rid, then the close."""
    got = conn.wait_closed()
    assert [b["t"] for b in got] == [*before, "error"], got
    error = got[-1]
    assert error["code"] == "bad_frame" and "rid" not in error, error
    assert isinstance(error["reason"], str) and error["reason"]


@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "logged_in"])
@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_is_answered_then_closed_and_others_unaffected(cluster, name, logged_in):
    with Users(cluster) as users:
        bystander, peer = users.new("by", 0), users.new("pe", 1)
        conv = dm(bystander.user, peer.user)
        culprit = users.new("bad", 0) if logged_in else users.connect(0)
        culprit.write_raw(BAD_FRAMES[name])
        assert_bad_frame_then_closed(culprit)
        assert culprit.eof
        # the same gate goes on serving everyone else
        assert bystander.request("ping")["t"] == "pong"
        ack = peer.send(conv, "still here?")
        assert ack["t"] == "ack", ack
        msg = bystander.expect("msg", conv=conv)
        assert (msg["seq"], msg["body"]) == (ack["seq"], "still here?")
        fresh_conn = users.connect(0)
        assert fresh_conn.request("ping")["t"] == "pong"


def test_good_frame_before_a_bad_one_is_answered_first(cluster):
    with Raw(cluster.gates[0]) as conn:
        conn.write_raw(encode_frame({"t": "ping", "rid": 1}) + b"\x00\x00\x00\x00"
                       + encode_frame({"t": "ping", "rid": 2}))
        got = conn.wait_closed()
        assert [(b["t"], b.get("rid")) for b in got] == [("pong", 1), ("error", None)], got
        assert got[1]["code"] == "bad_frame"


def test_bad_frame_ends_the_session_of_a_logged_in_user(cluster):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        a.write_raw(BAD_FRAMES["zero_length"])
        assert_bad_frame_then_closed(a)
        # the user is no longer there: a DM to them is stored and replayed at the next login
        conv = dm(a.user, b.user)
        ack = b.send(conv, "after your bad frame")
        again = users.relogin(a.user, gate=0)
        msg = again.expect("msg", conv=conv)
        assert (msg["seq"], msg["body"]) == (ack["seq"], "after your bad frame")


def test_frame_of_exactly_max_frame_bytes_is_accepted(cluster):
    head = pk({"t": "ping", "rid": 7, "pad": ""})   # "" is a 1-byte fixstr header...
    pad = MAX_FRAME - (len(head) - 1) - 3           # ...the padding gets a 3-byte str16 one
    body = pk({"t": "ping", "rid": 7, "pad": "x" * pad})
    assert len(body) == MAX_FRAME
    with Raw(cluster.gates[0]) as conn:
        conn.write_raw(frame(body))
        pong = conn.next()
        assert pong["t"] == "pong" and pong["rid"] == 7
        over = pk({"t": "ping", "rid": 8, "pad": "x" * (pad + 1)})
        assert len(over) == MAX_FRAME + 1
        conn.write_raw(frame(over))
        assert_bad_frame_then_closed(conn)


def test_frames_split_anywhere_and_back_to_back(cluster):
    with Raw(cluster.gates[1]) as conn:
        data = b"".join(encode_frame({"t": "ping", "rid": i}) for i in range(1, 6))
        for i in range(len(data)):           # one byte per write
            conn.write_raw(data[i:i + 1])
        got = [conn.expect("pong", rid=i) for i in range(1, 6)]
        assert [p["rid"] for p in got] == [1, 2, 3, 4, 5]
        assert all(isinstance(p["ts"], int) for p in got)


# -- unknown_type, auth_required ------------------------------------------------------------
@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "logged_in"])
def test_unknown_type_keeps_the_connection(cluster, logged_in):
    with Users(cluster) as users:
        conn = users.new("u") if logged_in else users.connect()
        for t in ("dance", "", "SEND", "welcome", "ack", "msg"):
            reply = conn.request(t, conv="sys")
            assert (reply["t"], reply["code"]) == ("error", "unknown_type"), (t, reply)
        conn.write({"t": "dance"})                     # no rid: the error has none
        error = conn.expect("error")
        assert error["code"] == "unknown_type" and "rid" not in error
        assert conn.is_open()


AUTH_NEEDED = [
    ("send", {"conv": "sys", "cid": "c1", "body": "x"}),
    ("sync", {"conv": "sys", "after": 0}),
    ("logout", {}),
    ("join", {"room": "r:lobby"}),
    ("leave", {"room": "r:lobby"}),
    ("group_create", {"group": "g:x", "members": []}),
    ("group_add", {"group": "g:x", "user": "bob"}),
    ("group_remove", {"group": "g:x", "user": "bob"}),
    ("group_leave", {"group": "g:x"}),
    ("send", {}),                                      # not even its fields are looked at
]


@pytest.mark.parametrize("t, fields", AUTH_NEEDED, ids=[f"{t}{i}" for i, (t, _) in enumerate(AUTH_NEEDED)])
def test_auth_required_before_login(cluster, t, fields):
    with Raw(cluster.gates[0]) as conn:
        reply = conn.request(t, **fields)
        assert (reply["t"], reply["code"], reply["rid"]) == ("error", "auth_required", 1), reply
        assert conn.is_open()


def test_recv_before_login_is_auth_required(cluster):
    with Raw(cluster.gates[0]) as conn:
        conn.write({"t": "recv", "conv": "sys", "seq": 1})
        error = conn.expect("error")
        assert error["code"] == "auth_required" and "rid" not in error
        assert conn.is_open()


def test_register_login_ping_need_no_login(cluster):
    with Raw(cluster.gates[0]) as conn:
        assert conn.request("ping")["t"] == "pong"
        name = fresh()
        assert conn.register(name)["t"] == "ok"
        assert conn.login(name)["t"] == "welcome"


# -- bad_request ----------------------------------------------------------------------------
def bad_request_cases(me: str, other: str):
    conv = dm(me, other)
    return [
        ("send", {"conv": conv, "body": "x"}),                       # no cid
        ("send", {"conv": conv, "cid": 5, "body": "x"}),             # cid not a string
        ("send", {"conv": conv, "cid": "", "body": "x"}),            # cid empty
        ("send", {"conv": conv, "cid": "c" * 65, "body": "x"}),      # cid over 64 bytes
        ("send", {"conv": conv, "cid": "é" * 33, "body": "x"}),      # 66 bytes in UTF-8
        ("send", {"cid": "c1", "body": "x"}),                        # no conv
        ("send", {"conv": 12, "cid": "c1", "body": "x"}),            # conv not a string
        ("send", {"conv": [conv], "cid": "c1", "body": "x"}),
        ("send", {"conv": None, "cid": "c1", "body": "x"}),
        ("send", {"conv": conv, "cid": "c1"}),                       # no body
        ("sync", {"conv": conv}),                                    # no after
        ("sync", {"conv": conv, "after": "0"}),
        ("sync", {"conv": conv, "after": 1.5}),
        ("sync", {"conv": conv, "after": True}),
        ("sync", {"conv": conv, "after": -1}),
        ("sync", {"conv": conv, "after": 0, "limit": "10"}),
        ("sync", {"conv": 7, "after": 0}),
        ("register", {"user": 5, "password": PASSWORD}),
        ("register", {"user": "x"}),
        ("login", {"user": me}),                                     # neither password nor token
        ("login", {"password": PASSWORD}),
        ("login", {"user": me, "password": 12345678}),
        ("login", {"user": me, "password": PASSWORD, "v": 2}),       # another protocol version
        ("login", {"user": me, "password": PASSWORD, "v": "1"}),
        ("login", {"user": me, "password": PASSWORD, "v": 0}),
    ]


def test_bad_request_for_missing_or_mistyped_fields(cluster):
    with Users(cluster) as users:
        other = register(cluster)
        me = users.new("me")                   # logged in: register/login checks apply too
        anon = users.connect()
        for t, fields in bad_request_cases(me.user, other):
            conn = anon if t in ("login",) else me
            reply = conn.request(t, **fields)
            assert (reply["t"], reply.get("code")) == ("error", "bad_request"), (t, fields, reply)
            assert isinstance(reply["reason"], str) and reply["reason"]
        assert me.is_open() and anon.is_open()
        # nothing was stored by the refused sends
        assert stored_seqs(redis_client(cluster), dm(me.user, other)) == []
        # the anonymous connection can still log in (a bad_request is no failed login)
        assert anon.login(me.user)["t"] == "welcome"


def test_recv_with_mistyped_fields_is_bad_request(cluster):
    with Users(cluster) as users:
        me = users.new("me")
        conv = dm(me.user, register(cluster))
        for fields in ({"conv": conv, "seq": "1"}, {"conv": conv}, {"conv": 3, "seq": 1},
                       {"seq": 1}, {"conv": conv, "seq": 1.0}):
            reply = me.request("recv", **fields)
            assert (reply["t"], reply["code"]) == ("error", "bad_request"), (fields, reply)
        assert me.is_open()


@pytest.mark.parametrize("rid", ["1", 1.5, [1], {"a": 1}, True], ids=["str", "float", "list", "map", "bool"])
def test_rid_not_an_int_is_bad_request_without_rid(cluster, rid):
    with Users(cluster) as users:
        for conn in (users.connect(), users.new("r")):
            conn.write({"t": "ping", "rid": rid})
            error = conn.expect("error")
            assert error["code"] == "bad_request" and "rid" not in error, error
            assert conn.is_open()


def test_unknown_fields_are_ignored(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        conv = dm(a.user, register(cluster))
        ack = a.request("send", conv=conv, cid="k1", body="hi", extra={"x": 1}, color="red")
        assert ack["t"] == "ack" and ack["seq"] == 1


# -- bad_conv, not_member -------------------------------------------------------------------
def test_bad_conv(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        lo, hi = sorted([a.user, register(cluster)], key=str.encode)
        ghost = fresh("ghost")                               # valid name, never registered
        bad = [
            f"d:{a.user}:{a.user}",                          # d:a:a
            f"d:{hi}:{lo}",                                  # d:b:a
            "d:a:a", "d:b:a",
            f"d:{lo}", f"d:{lo}:{hi}:x", f"d::{hi}", "d:a b:c",
            "x:foo", "g:", "r:", "g:bad name", "", "SYS", "dm", "d:" + "a" * 33 + ":" + "b" * 33,
            dm(a.user, ghost),                               # a DM with a user who does not exist
        ]
        for conv in bad:
            reply = a.send(conv, "hello")
            assert (reply["t"], reply.get("code")) == ("error", "bad_conv"), (conv, reply)
            reply = a.request("sync", conv=conv, after=0)
            assert (reply["t"], reply.get("code")) == ("error", "bad_conv"), (conv, reply)
        assert a.is_open()
        r = redis_client(cluster)
        assert stored_seqs(r, dm(a.user, ghost)) == [] and r.get(r.layout.seq(dm(a.user, ghost))) is None


def test_not_member(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        x, y = register(cluster), register(cluster)
        others = dm(x, y)
        for reply in (a.send(others, "let me in"), a.request("sync", conv=others, after=0),
                      a.send("sys", "announcement"), a.send("r:neverjoined", "hi"),
                      a.request("sync", conv="r:neverjoined", after=0)):
            assert (reply["t"], reply.get("code")) == ("error", "not_member"), reply
        # syncing sys is open to every logged-in user
        history = a.request("sync", conv="sys", after=0)
        assert history["t"] == "history" and history["conv"] == "sys" and isinstance(history["last_seq"], int)
        assert stored_seqs(redis_client(cluster), others) == []
        assert a.is_open()


# -- too_large ------------------------------------------------------------------------------
def test_too_large_body(cluster):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        conv = dm(a.user, b.user)
        exact = "x" * 4093                      # str16: 3 + 4093 = 4096 bytes encoded
        assert len(pk(exact)) == 4096
        ack = a.send(conv, exact)
        assert ack["t"] == "ack" and ack["seq"] == 1
        assert b.expect("msg", conv=conv)["body"] == exact
        for body in ("x" * 4094, "y" * 60000, b"\x00" * 4094, ["z" * 1000] * 5, {"k": "v" * 4093}):
            assert len(pk(body)) > 4096
            reply = a.send(conv, body)
            assert (reply["t"], reply.get("code")) == ("error", "too_large"), reply
        assert a.is_open()
        assert stored_seqs(redis_client(cluster), conv) == [1]
        # the next good send gets the next seq: refused sends use none
        assert a.send(conv, "small")["seq"] == 2


def test_send_checks_run_in_the_contract_order(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        x, y = register(cluster), register(cluster)
        big = "x" * 5000
        cases = [
            ({"conv": "d:b:a", "body": big}, "bad_request"),               # no cid beats bad_conv
            ({"conv": 5, "cid": "c", "body": big}, "bad_request"),
            ({"conv": "d:b:a", "cid": "c1", "body": big}, "bad_conv"),     # bad_conv beats too_large
            ({"conv": dm(a.user, fresh("nobody")), "cid": "c2", "body": big}, "bad_conv"),
            ({"conv": "sys", "cid": "c3", "body": big}, "not_member"),    # not_member beats too_large
            ({"conv": "r:notjoined", "cid": "c4", "body": big}, "not_member"),
            ({"conv": dm(x, y), "cid": "c5", "body": big}, "not_member"),
            ({"conv": dm(a.user, x), "cid": "c6", "body": big}, "too_large"),
        ]
        for fields, code in cases:
            reply = a.request("send", **fields)
            assert (reply["t"], reply.get("code")) == ("error", code), (fields, reply)


# -- rate ------------------------------------------------------------------------------------
def test_send_rate_limit_answers_keeps_the_connection_and_resend_of_acked_cid_is_acked(cluster):
    """20 sends/s, burst 40: a pipelined flood gets rate_limited past the burst, nothing
    refused is stored, the connection stays, and a resend of an acked cid still gets its
    ack while over the rate (the resend check comes before the rate)."""
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        conv = dm(a.user, b.user)
        cids = [f"flood-{i}" for i in range(60)]
        rids = [a.begin("send", conv=conv, cid=cid, body=i) for i, cid in enumerate(cids)]
        replies = [a.reply(rid) for rid in rids]
        acked = {cid: r for cid, r in zip(cids, replies) if r["t"] == "ack"}
        limited = [cid for cid, r in zip(cids, replies) if r.get("code") == "rate_limited"]
        assert len(acked) + len(limited) == 60, replies
        assert 40 <= len(acked) <= 48, len(acked)     # the burst, plus what refilled meanwhile
        assert cids[:40] == list(acked)[:40]           # the first 40 are within the burst
        assert sorted(r["seq"] for r in acked.values()) == list(range(1, len(acked) + 1))
        assert stored_seqs(redis_client(cluster), conv) == list(range(1, len(acked) + 1))
        # still over the rate: 45 more new sends (at most 40 can have refilled), then the
        # resend of an acked cid and of a refused one
        more = [a.begin("send", conv=conv, cid=f"more-{i}", body=i) for i in range(45)]
        resend_acked = a.begin("send", conv=conv, cid=cids[0], body=0)
        more_replies = [a.reply(rid) for rid in more]
        assert more_replies[-1].get("code") == "rate_limited", more_replies[-1]
        again = a.reply(resend_acked)
        first = acked[cids[0]]
        assert again["t"] == "ack", again
        assert (again["seq"], again["ts"], again["cid"], again["conv"]) == \
            (first["seq"], first["ts"], first["cid"], first["conv"])
        assert a.is_open()
        total = len(acked) + sum(1 for r in more_replies if r["t"] == "ack")
        assert stored_seqs(redis_client(cluster), conv) == list(range(1, total + 1))
        # b got each stored message once, in order
        got = b.msgs(conv, total)
        assert [m["seq"] for m in got] == list(range(1, total + 1))
        assert not [m for m in b.fence(conv) if m.get("t") == "msg"]


def test_only_send_counts_against_the_rate(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        conv = dm(a.user, register(cluster))
        rids = [a.begin("ping") for _ in range(200)] + [a.begin("sync", conv=conv, after=0) for _ in range(50)]
        assert all(a.reply(r)["t"] in ("pong", "history") for r in rids)
        rids = [a.begin("send", conv=conv, cid=f"c{i}", body=i) for i in range(40)]
        assert [a.reply(r)["t"] for r in rids] == ["ack"] * 40
