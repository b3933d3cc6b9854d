"""The client's bookkeeping (pure logic) and its framing and rid matching over real sockets.

The peer is a scripted fake on a local StreamServer: it tests the client, not the server.
"""
import io
import itertools
import os
import random

import gevent
import pytest
from gevent.event import Event
from gevent.queue import Queue
from gevent.server import StreamServer

import cluster  # noqa: F401
from client.terminal import ChatSession, run_chat
from client.terminal_format import clean, describe_error, hhmm
from client import Client, ClientError, ConnectionLost, RequestTimeout, dm_conv
from client.moving import MOVE_WAIT_DEFAULT, MOVE_WAIT_MAX, moving_plan, parse_address
from client.tracking import SendBook, SeqTracker
from cluster.codec import FrameReader, decode_body, encode_frame

DM = "d:alice:bob"


def msg(conv, seq, sender="bob", body="x"):
    return {"t": "msg", "conv": conv, "seq": seq, "from": sender, "ts": 0, "cid": f"c{seq}", "body": body}


class Recorder:                                     # a SeqTracker with its outputs recorded
    def __init__(self, sending=False):
        self.seen, self.fills = [], []
        self.t = SeqTracker(lambda st, m: self.seen.append(m["seq"]), self.fills.append, lambda _: sending)


# -- pure bookkeeping --------------------------------------------------------------------
def test_dm_conv_orders_names_by_bytes_and_refuses_nonsense():
    assert dm_conv("bob", "alice") == dm_conv("alice", "bob") == DM
    assert dm_conv("a", "B") == "d:B:a"
    for a, b in (("al", "al"), ("al", "x:y"), ("", "bob")):
        with pytest.raises(ValueError):
            dm_conv(a, b)


def test_duplicates_are_dropped_and_counted_and_the_first_push_sets_the_base():
    r = Recorder()
    for seq in (41, 42, 42, 41, 43):
        r.t.on_msg(msg(DM, seq))
    assert r.seen == [41, 42, 43] and r.t.counters["dups"] == 2 and r.fills == []


def test_room_gap_is_counted_and_delivered():
    r = Recorder()
    for seq in (1, 4, 5):
        r.t.on_msg(msg("r:lobby", seq))
    assert r.seen == [1, 4, 5] and r.fills == []
    assert (r.t.counters["gaps"], r.t.counters["missed"]) == (1, 2)


def test_durable_gap_holds_later_pushes_until_the_sync_fills_the_hole():
    r = Recorder()
    r.t.on_msg(msg(DM, 1))
    r.t.on_msg(msg(DM, 4))
    assert r.seen == [1] and len(r.fills) == 1 and r.t.fill_need(r.fills[0]) == 3
    r.t.on_msg(msg(DM, 5))                          # held too, no second fill
    assert r.t.synced(r.fills[0], [msg(DM, 2), msg(DM, 3), msg(DM, 4)]) and len(r.fills) == 1
    r.t.end_fill(r.fills[0])
    assert r.seen == [1, 2, 3, 4, 5]
    assert (r.t.counters["gaps"], r.t.counters["filled"], r.t.counters["lost"]) == (1, 2, 0)


def test_a_push_below_one_seen_is_out_of_order_and_closes_the_hole():
    r = Recorder()
    for seq in (1, 3, 2):
        r.t.on_msg(msg(DM, seq))
    assert r.seen == [1, 2, 3] and r.t.counters["out_of_order"] == 1
    assert r.t.fill_need(r.fills[0]) <= r.fills[0].last


def test_a_hole_the_server_cannot_fill_is_lost_and_the_held_pushes_released():
    r = Recorder()
    r.t.on_msg(msg(DM, 1))
    r.t.on_msg(msg(DM, 5))
    assert not r.t.synced(r.fills[0], [])
    r.t.end_fill(r.fills[0])
    assert r.seen == [1, 5] and r.t.counters["lost"] == 3 and r.t.counters["fill_failed"] == 1


def test_own_acks_count_as_seen_whatever_the_order():
    r = Recorder()
    r.t.on_ack(DM, 5)                               # our ack overtook bob's seq 4
    r.t.on_msg(msg(DM, 4))
    r.t.on_msg(msg(DM, 6))
    r.t.on_msg(msg(DM, 5))                          # a replay of our own message
    assert r.seen == [4, 6] and r.fills == [] and r.t.counters["dups"] == 1


def test_room_gap_waits_for_an_own_send_in_flight():
    r = Recorder(sending=True)
    r.t.on_join({"conv": "r:lobby", "last_seq": 10, "recent": []})
    r.t.on_msg(msg("r:lobby", 12))
    assert r.seen == [] and len(r.fills) == 1
    r.t.on_ack("r:lobby", 11)
    assert r.seen == [12]
    r.t.end_fill(r.fills[0])
    assert r.t.counters["gaps"] == r.t.counters["missed"] == 0


def test_catch_up_fills_conversations_known_or_replayed_and_bases_the_others():
    r = Recorder()
    r.t.on_msg(msg(DM, 3))
    known = r.t.on_welcome()
    r.t.on_msg(msg("g:team", 1))
    r.t.on_ack("d:alice:dave", 5)                   # sent after the login; nothing replayed
    assert r.t.catch_up({DM: 5, "d:alice:carol": 9, "d:alice:dave": 4, "g:team": 2, "sys": 7}, known) == [
        DM, "d:alice:carol", "d:alice:dave", "g:team"]
    assert sorted((st.conv, st.target) for st in r.fills) == [(DM, 5), ("g:team", 2)]
    assert (r.t.last_seen("d:alice:carol"), r.t.last_seen("d:alice:dave")) == (9, 5)


def test_send_book_keeps_unacked_sends_in_order_until_ack_or_error():
    book = SendBook()
    a, b = book.add(DM, "c1", "hi"), book.add(DM, "c2", "yo")
    assert book.add(DM, "c1", "other") is a and [p.cid for p in book.pending.values()] == ["c1", "c2"]
    book.acked({"t": "ack", "conv": DM, "cid": "c1", "seq": 3})
    assert a.done.get(timeout=0)["seq"] == 3 and book.to(DM) == [b]
    book.settle(b, {"t": "ack"})                    # acks settle through acked() only
    assert book.to(DM) == [b]
    book.settle(b, {"t": "error", "code": "muted"})
    assert book.pending == {} and b.done.get(timeout=0)["code"] == "muted"


def test_addresses_of_a_moving_kick_parse_with_ipv6_brackets_and_refuse_nonsense():
    assert parse_address("10.0.0.5:7710") == ("10.0.0.5", 7710)
    assert parse_address("[::1]:7700") == ("::1", 7700)
    assert parse_address("chat.example.com:443") == ("chat.example.com", 443)
    for bad in (None, 7700, "", "host", ":7700", "host:", "host:x", "host:0", "host:70000"):
        assert parse_address(bad) is None, bad


def test_a_moving_plan_tries_the_named_gates_at_random_and_the_draining_one_last():
    here = ("127.0.0.1", 7700)
    body = {"t": "kicked", "reason": "moving", "retry_ms": 800,
            "gates": [{"tcp": "127.0.0.1:7710", "ws": "127.0.0.1:7711"}, {"tcp": "127.0.0.1:7720"},
                      {"tcp": "127.0.0.1:7700"}, {"ws": "127.0.0.1:7731"}, "junk", {"tcp": "nonsense"}]}
    firsts = set()
    for seed in range(40):
        wait, order = moving_plan(body, here, random.Random(seed))
        assert 0 <= wait <= 0.8
        assert sorted(order[:-1]) == [("127.0.0.1", 7710), ("127.0.0.1", 7720)] and order[-1] == here
        firsts.add(order[0])
    assert len(firsts) == 2                         # a random gate, not always the same one


def test_a_moving_plan_without_gates_or_a_usable_retry_ms_stays_and_waits_a_little():
    here = ("127.0.0.1", 7700)
    for body in ({"t": "kicked", "reason": "moving"}, {"gates": "x", "retry_ms": "soon"},
                 {"gates": [], "retry_ms": -5}, {"gates": None, "retry_ms": True}):
        wait, order = moving_plan(body, here, random.Random(1))
        assert order == [here] and 0 <= wait <= MOVE_WAIT_DEFAULT
    wait, _ = moving_plan({"retry_ms": 10 ** 9}, here, random.Random(1))
    assert wait <= MOVE_WAIT_MAX


# -- over a socket: a scripted peer ------------------------------------------------------
class FakePeer:
    """Answers login/ping/send/sync/join/logout like a gate would; records every frame."""

    def __init__(self):
        self.frames, self.log, self.socks, self.accepted = Queue(), [], [], Event()
        self.seqs, self.acks, self.history = {}, {}, {}
        self.welcome_convs, self.replay = {}, []
        self.tokens, self.clients = itertools.count(1), []
        self.handlers = {"login": self.on_login, "send": self.on_send, "sync": self.on_sync,
                         "logout": self.on_logout, "register": lambda req: [{"t": "ok", "rid": req["rid"]}],
                         "ping": lambda req: [{"t": "pong", "rid": req["rid"], "ts": 0}] if "rid" in req else [],
                         "join": lambda req: [{"t": "joined", "rid": req["rid"], "conv": req["room"],
                                               "last_seq": 5, "recent": []}]}
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()

    def client(self, **options):
        options.setdefault("timeout", 2.0)
        self.clients.append(Client("127.0.0.1", self.server.server_port, **options).connect())
        return self.clients[-1]

    def _serve(self, sock, _addr):
        self.socks.append(sock)
        self.accepted.set()
        reader = FrameReader()
        try:
            while data := sock.recv(65536):
                for raw in reader.feed(data):
                    req = decode_body(raw)
                    self.frames.put(req)
                    self.log.append(req)
                    for reply in self.handlers.get(req["t"], lambda r: [])(req) or ():
                        self.write(reply, sock)
        except OSError:                             # dropped by the test
            pass

    def write(self, obj, sock=None):
        assert self.accepted.wait(2), "the client never connected"
        (sock or self.socks[-1]).sendall(obj if isinstance(obj, bytes) else encode_frame(obj))

    def drop(self):
        for sock in self.socks:
            sock.close()

    def next_frame(self, t, timeout=2.0):
        while True:
            req = self.frames.get(timeout=timeout)
            if req["t"] == t:
                return req

    def on_login(self, req):
        welcome = {"t": "welcome", "rid": req["rid"], "user": req["user"], "token": f"tok{next(self.tokens)}",
                   "expires": 0, "convs": dict(self.welcome_convs), "ts": 0}
        return [welcome] + self.replay

    def on_send(self, req):
        key = (req["conv"], req["cid"])
        if key not in self.acks:
            seq = self.seqs[req["conv"]] = self.seqs.get(req["conv"], 0) + 1
            self.acks[key] = {"t": "ack", "conv": req["conv"], "cid": req["cid"], "seq": seq, "ts": 0}
        return [dict(self.acks[key], rid=req["rid"])]

    def on_sync(self, req):
        msgs = [m for m in self.history.get(req["conv"], []) if m["seq"] > req["after"]]
        return [{"t": "history", "rid": req["rid"], "conv": req["conv"], "msgs": msgs[:req.get("limit", 100)],
                 "last_seq": len(self.history.get(req["conv"], []))}]

    def on_logout(self, req):
        self.write({"t": "ok", "rid": req["rid"]})
        self.drop()


@pytest.fixture
def peer():
    p = FakePeer()
    yield p
    for client in p.clients:
        client.close()
    p.server.stop()


def barrier(client):
    client.ping()                                   # what the peer sent before the pong is handled


def test_replies_are_matched_by_rid_even_out_of_order(peer):
    held = []
    peer.handlers["ping"] = lambda req: held.append(req) or (
        [{"t": "pong", "rid": r["rid"], "ts": i} for i, r in enumerate(reversed(held))] if len(held) == 2 else [])
    c = peer.client(ping_interval=None)
    first, second = gevent.spawn(c.request, "ping"), gevent.spawn(c.request, "ping")
    gevent.joinall([first, second], timeout=3, raise_error=True)
    assert (first.value["rid"], first.value["ts"]) == (1, 1) and (second.value["rid"], second.value["ts"]) == (2, 0)


def test_an_error_reply_is_returned_raw_or_raised(peer):
    peer.handlers["send"] = lambda req: [{"t": "error", "rid": req["rid"], "code": "rate_limited",
                                          "reason": "slow down", "retry_ms": 500}]
    c = peer.client()
    assert c.request("send", conv=DM, cid="x", body="hi")["code"] == "rate_limited"
    with pytest.raises(ClientError) as err:
        c.send(DM, "hi")
    assert (err.value.code, err.value.retry_ms) == ("rate_limited", 500) and c.unacked == []


def test_a_timed_out_send_stays_unacked_until_its_late_ack(peer):
    peer.handlers["send"] = lambda req: []
    c = peer.client()
    with pytest.raises(RequestTimeout):
        c.send(DM, "hi", cid="c-1", timeout=0.2)
    req = peer.next_frame("send")
    assert [(p.conv, p.cid, p.body) for p in c.unacked] == [(DM, "c-1", "hi")]
    peer.write({"t": "ack", "rid": req["rid"], "conv": DM, "cid": "c-1", "seq": 1, "ts": 0})
    barrier(c)
    assert c.unacked == [] and c.counters["late_replies"] == 1


def test_generated_cids_are_unique(peer):
    c = peer.client()
    acks = [c.send(DM, str(i)) for i in range(3)]
    assert len({a["cid"] for a in acks}) == 3 and [a["seq"] for a in acks] == [1, 2, 3]


def test_pushes_are_deduplicated_and_acknowledged_with_recv(peer):
    peer.replay = [msg(DM, 1), msg(DM, 2), msg(DM, 2)]
    c = peer.client(auto_recv=True)
    c.login("alice", "pw")
    assert [c.expect("msg", conv=DM)["seq"] for _ in range(2)] == [1, 2]
    barrier(c)
    assert c.counters["dups"] == 1 and c.get_push(0) is None
    assert peer.next_frame("recv") == {"t": "recv", "conv": DM, "seq": 2}


def test_a_durable_gap_is_synced_and_delivered_in_order(peer):
    peer.history[DM] = [msg(DM, s) for s in (1, 2, 3)]
    peer.replay = [msg(DM, 1), msg(DM, 3)]
    c = peer.client()
    c.login("alice", "pw")
    assert [c.expect("msg")["seq"] for _ in range(3)] == [1, 2, 3]
    assert peer.next_frame("sync")["after"] == 1 and c.counters["gaps"] == 1


def test_large_server_frames_arrive_whole(peer):
    c = peer.client()
    peer.write(msg("r:big", 1, body="z" * 900_000))
    assert len(c.expect("msg", timeout=5)["body"]) == 900_000


def test_a_bad_frame_from_the_server_closes_the_connection(peer):
    c = peer.client(reconnect=True)
    peer.write(b"\x00\x00\x00\x00")
    assert c.closed.wait(3) and c.counters["bad_frames"] == 1
    with pytest.raises(ConnectionLost):
        c.ping()


def test_kicked_is_visible_and_ends_the_client_without_reconnect(peer):
    c = peer.client(reconnect=True)
    c.login("alice", "pw")
    peer.write({"t": "kicked", "reason": "session_replaced"})
    peer.drop()
    assert c.closed.wait(3) and c.kicked_reason == "session_replaced"
    assert c.expect("kicked", timeout=1)["reason"] == "session_replaced"   # closed: no reconnect follows


def test_close_fails_the_waiting_requests(peer):
    peer.handlers["sync"] = lambda req: []
    c = peer.client()
    waiting = gevent.spawn(c.sync, DM, 0)
    peer.next_frame("sync")
    c.close()
    waiting.join(2)
    assert isinstance(waiting.exception, ConnectionLost) and c.closed.is_set()


def test_a_refused_token_falls_back_to_the_password(peer):
    refuse = {"t": "error", "code": "auth_failed", "reason": "token expired"}
    peer.handlers["login"] = lambda req: [dict(refuse, rid=req["rid"])] if "token" in req else peer.on_login(req)
    c = peer.client(reconnect=True)
    c.login("alice", "secret-pw")
    peer.drop()
    logins = [peer.next_frame("login") for _ in range(3)]
    assert [(f.get("token"), f.get("password")) for f in logins] == [
        (None, "secret-pw"), ("tok1", None), (None, "secret-pw")]
    assert c.session_up.wait(2) and not c.closed.is_set()


def test_logout_ends_the_client_for_good(peer):
    c = peer.client(reconnect=True)
    c.login("alice", "pw")
    assert c.logout()["t"] == "ok"
    assert c.closed.wait(3) and not c.connected


def test_reconnect_logs_in_with_the_token_and_resends_with_the_same_cid(peer):
    dropped = []                                     # the first send is lost with its connection
    peer.handlers["send"] = lambda req: peer.on_send(req) if dropped else dropped.append(peer.drop())
    c = peer.client(reconnect=True, timeout=3.0)
    c.login("alice", "secret-pw")
    ack = c.send(DM, "hi", cid="keep-me")
    assert (ack["cid"], ack["seq"]) == ("keep-me", 1)
    logins = [f for f in peer.log if f["t"] == "login"]
    assert logins[1].get("token") == "tok1" and "password" not in logins[1]
    assert [f["cid"] for f in peer.log if f["t"] == "send"] == ["keep-me", "keep-me"]
    assert (c.counters["reconnects"], c.counters["resent"]) == (1, 1)


def test_after_a_reconnect_conversations_behind_welcome_are_synced(peer):
    peer.replay = [msg(DM, 1), msg(DM, 2)]
    c = peer.client(reconnect=True)
    c.login("alice", "pw")
    assert [c.expect("msg")["seq"] for _ in range(2)] == [1, 2]
    barrier(c)
    peer.replay, peer.welcome_convs = [], {DM: 4}
    peer.history[DM] = [msg(DM, s) for s in (1, 2, 3, 4)]
    peer.drop()
    assert [c.expect("msg", timeout=5)["seq"] for _ in range(2)] == [3, 4]
    assert c.counters["dups"] == 0


@pytest.fixture
def other_peer():
    p = FakePeer()
    yield p
    p.server.stop()


def moving(*peers, retry_ms=100):
    return {"t": "kicked", "reason": "moving", "retry_ms": retry_ms,
            "gates": [{"tcp": f"127.0.0.1:{p.server.server_port}"} for p in peers]}


def test_moving_reconnects_to_the_named_gate_with_the_token_and_resends_the_unacked(peer, other_peer):
    peer.handlers["send"] = lambda req: []          # the draining gate never acks
    c = peer.client(reconnect=True, ping_interval=None)
    c.login("alice", "secret-pw")
    waiting = gevent.spawn(c.send, DM, "hi", "keep-me", 5.0)
    peer.next_frame("send")
    peer.write(moving(other_peer, retry_ms=200))
    peer.drop()
    ack = waiting.get(timeout=5)
    assert (ack["cid"], ack["seq"]) == ("keep-me", 1)
    assert c.addr == ("127.0.0.1", other_peer.server.server_port) and c.session_up.is_set()
    login = other_peer.next_frame("login")
    assert login.get("token") == "tok1" and "password" not in login
    assert [f["cid"] for f in other_peer.log if f["t"] == "send"] == ["keep-me"]
    assert [f["t"] for f in peer.log].count("login") == 1   # never back to the draining gate
    assert c.kicked_reason == "moving" and not c.closed.is_set()
    assert (c.counters["reconnects"], c.counters["resent"]) == (1, 1)


def test_moving_to_a_gate_that_refuses_falls_back_to_the_old_address(peer):
    gone = StreamServer(("127.0.0.1", 0), lambda sock, addr: None)
    gone.start()
    gone_port = gone.server_port
    gone.stop()                                     # nothing listens there any more
    c = peer.client(reconnect=True, ping_interval=None, backoff=(0.05, 0.2))
    c.login("alice", "pw")
    peer.write({"t": "kicked", "reason": "moving", "retry_ms": 50, "gates": [{"tcp": f"127.0.0.1:{gone_port}"}]})
    peer.drop()
    logins = [peer.next_frame("login", timeout=5) for _ in range(2)]
    assert logins[1].get("token") == "tok1"
    assert c.session_up.wait(2) and c.addr == ("127.0.0.1", peer.server.server_port)


# -- issue 15: edit, recall, typing, presence, status, passive rooms ----------------------
def test_passive_digests_and_focus_move_a_room_without_delivering():
    r = Recorder(sending=False)
    r.t.on_join({"conv": "r:lobby", "last_seq": 5, "recent": []})
    c = Client()                                   # not connected: only the bookkeeping is used
    c.track = r.t
    c._seen_upto("r:lobby", 9, 6)                  # a digest of 6..9
    assert r.t.last_seen("r:lobby") == 9 and r.seen == [] and r.t.counters["missed"] == 0
    c._seen_upto("r:lobby", 15, 12)                # 10..11 never came
    assert r.t.last_seen("r:lobby") == 15 and r.t.counters["missed"] == 2
    c._seen_upto("r:lobby", 12)                    # never backwards
    r.t.on_msg(msg("r:lobby", 16))
    assert r.t.last_seen("r:lobby") == 16 and r.seen == [16] and r.t.counters["gaps"] == 1
    c._seen_upto("r:lobby", "x")
    c._seen_upto(None, 3)
    assert r.t.last_seen("r:lobby") == 16


def test_own_seqs_covered_by_a_digest_are_dropped():
    r = Recorder()
    r.t.on_join({"conv": "r:lobby", "last_seq": 5, "recent": []})
    c = Client()
    c.track = r.t
    for seq in range(7, 7 + 40):                   # own sends a passive room never pushes back
        r.t.on_ack("r:lobby", seq)
        c._seen_upto("r:lobby", seq, seq)
    st = r.t.convs["r:lobby"]
    assert st.last == 46 and st.own == set()


def test_edit_and_recall_ack_like_sends_and_raise_their_errors(peer):
    peer.handlers["edit"] = peer.on_send
    peer.handlers["recall"] = lambda req: [{"t": "error", "rid": req["rid"], "code": "not_sender", "reason": "no"}]
    c = peer.client()
    c.login("alice", "pw")
    assert c.send(DM, "helo")["seq"] == 1
    ack = c.edit(DM, 1, "hello", cid="e-1")
    assert (ack["cid"], ack["seq"]) == ("e-1", 2)
    with pytest.raises(ClientError) as err:
        c.recall(DM, 1)
    assert err.value.code == "not_sender" and c.unacked == []
    frames = [f for f in peer.log if f["t"] in ("edit", "recall")]
    assert {k: v for k, v in frames[0].items() if k != "rid"} == {
        "t": "edit", "conv": DM, "cid": "e-1", "seq": 1, "body": "hello"}
    assert set(frames[1]) == {"t", "rid", "conv", "cid", "seq"} and frames[1]["seq"] == 1
    assert frames[1]["cid"].startswith(c._cid_prefix)
    assert c.track.convs[DM].own == {1, 2}         # the edit's seq is own, like a send's


def test_a_pending_edit_is_resent_as_an_edit_with_its_cid(peer):
    dropped = []
    peer.handlers["recall"] = lambda req: peer.on_send(req) if dropped else dropped.append(peer.drop())
    c = peer.client(reconnect=True, timeout=3.0)
    c.login("alice", "pw")
    assert c.recall(DM, 4, cid="r-1")["cid"] == "r-1"
    resent = [f for f in peer.log if f["t"] in ("send", "recall")]
    assert [(f["t"], f["cid"], f["seq"]) for f in resent] == [("recall", "r-1", 4), ("recall", "r-1", 4)]
    assert c.counters["resent"] == 1


def test_a_timed_out_edit_stays_unacked_with_its_body(peer):
    c = peer.client()
    with pytest.raises(RequestTimeout):
        c.edit(DM, 3, "fixed", cid="e-9", timeout=0.2)
    assert [(p.conv, p.cid, p.body, p.t, p.fields) for p in c.unacked] == [
        (DM, "e-9", "fixed", "edit", {"seq": 3, "body": "fixed"})]


def test_typing_presence_status_and_join_modes_send_what_is_given(peer):
    peer.handlers["presence_sub"] = lambda req: [{"t": "presence", "rid": req["rid"], "users": {
        u: "online" for u in req["users"]}, "texts": {}}]
    peer.handlers["set_status"] = lambda req: [{"t": "ok", "rid": req["rid"]}]
    c = peer.client()
    c.login("alice", "pw")
    c.typing(DM)
    assert peer.next_frame("typing") == {"t": "typing", "conv": DM}     # no rid: no reply waited for
    assert c.presence_sub(("bob", "carol"))["users"] == {"bob": "online", "carol": "online"}
    assert c.presence_users == ["bob", "carol"] and peer.next_frame("presence_sub")["users"] == ["bob", "carol"]
    c.set_status(text="afk")
    c.set_status(hidden=False)
    assert [{k: v for k, v in peer.next_frame("set_status").items() if k != "rid"} for _ in range(2)] == [
        {"t": "set_status", "text": "afk"}, {"t": "set_status", "hidden": False}]
    c.join("r:lobby")
    c.join("r:hall", mode="passive")
    joins = [peer.next_frame("join") for _ in range(2)]
    assert "mode" not in joins[0] and joins[1]["mode"] == "passive"
    assert c.passive == {"r:hall"} and c.last_seen("r:hall") == 5


def test_new_pushes_reach_the_app_and_digests_keep_the_position(peer):
    c = peer.client()
    c.login("alice", "pw")
    c.join("r:hall", mode="passive")
    for push in ({"t": "read", "conv": DM, "user": "bob", "seq": 3}, {"t": "typing", "conv": DM, "user": "bob"},
                 {"t": "presence", "user": "bob", "status": "online"},
                 {"t": "digest", "conv": "r:hall", "from_seq": 6, "to_seq": 9, "count": 4,
                  "recent": [msg("r:hall", 9)]}):
        peer.write(push)
    assert c.expect("read")["seq"] == 3 and c.expect("typing")["user"] == "bob"
    assert c.expect("presence")["status"] == "online" and c.expect("digest")["to_seq"] == 9
    assert c.last_seen("r:hall") == 9 and c.counters["missed"] == 0


def test_edit_and_recall_events_are_tracked_like_messages(peer):
    c = peer.client()
    c.login("alice", "pw")
    event = dict(msg(DM, 2, body="new"), kind="edit", ref=1)
    for m in (msg(DM, 1), event, event, dict(msg(DM, 3, body=None), kind="recall", ref=1)):
        peer.write(m)
    assert [(m["seq"], m.get("kind")) for m in (c.expect("msg") for _ in range(3))] == [
        (1, None), (2, "edit"), (3, "recall")]
    assert c.counters["dups"] == 1 and c.last_seen(DM) == 3


def test_focus_returns_the_history_and_live_messages_follow_it(peer):
    def focus(req):                                # the answer and a live message in one read
        history = {"t": "history", "rid": req["rid"], "conv": req["room"], "last_seq": 12,
                   "msgs": [msg(req["room"], s) for s in (10, 11, 12)]}
        return [encode_frame(history) + encode_frame(msg(req["room"], 13))]
    peer.handlers["focus"] = focus
    c = peer.client()
    c.login("alice", "pw")
    c.join("r:hall", mode="passive")
    peer.write({"t": "digest", "conv": "r:hall", "from_seq": 6, "to_seq": 9, "count": 4, "recent": []})
    c.expect("digest")
    history = c.focus("r:hall")
    assert [m["seq"] for m in history["msgs"]] == [10, 11, 12] and "after" not in peer.next_frame("focus")
    assert c.expect("msg")["seq"] == 13 and c.last_seen("r:hall") == 13
    assert (c.counters["gaps"], c.counters["missed"]) == (0, 0) and c.passive == set()
    barrier(c)
    assert c.get_push(0) is None                   # the history's msgs are the caller's, not pushed
    c.focus("r:hall", after=3)
    assert peer.next_frame("focus")["after"] == 3


def test_a_refused_focus_raises(peer):
    peer.handlers["focus"] = lambda req: [{"t": "error", "rid": req["rid"], "code": "not_member",
                                           "reason": "join first"}]
    c = peer.client()
    with pytest.raises(ClientError) as err:
        c.focus("r:nope")
    assert err.value.code == "not_member" and c._focusing == {}


def test_the_welcome_unread_and_read_maps(peer):
    c = peer.client()
    assert c.unread == {} and c.read_seqs == {}
    peer.handlers["login"] = lambda req: [dict(peer.on_login(req)[0], unread={DM: 2}, read={DM: 7})]
    c.login("alice", "pw")
    assert c.unread == {DM: 2} and c.read_seqs == {DM: 7}


def test_a_reconnect_rejoins_passive_rooms_passive_and_watches_presence_again(peer):
    peer.handlers["presence_sub"] = lambda req: [{"t": "presence", "rid": req["rid"], "users": {
        u: "offline" for u in req["users"]}, "texts": {}}]
    c = peer.client(reconnect=True)
    c.login("alice", "pw")
    c.join("r:hall", mode="passive")
    c.presence_sub(["bob"])
    peer.drop()
    assert c.expect("presence", timeout=5)["users"] == {"bob": "offline"}   # the fresh answer, pushed
    joins = [f for f in peer.log if f["t"] == "join"]
    assert [j.get("mode") for j in joins] == ["passive", "passive"]
    assert [f["users"] for f in peer.log if f["t"] == "presence_sub"] == [["bob"], ["bob"]]


# -- the terminal chat -------------------------------------------------------------------
class Screen(io.StringIO):
    """stdout whose writes can be waited for."""

    def __init__(self):
        super().__init__()
        self.changed = Event()

    def write(self, text):
        self.changed.set()
        return super().write(text)

    def wait_for(self, text, timeout=3.0):
        with gevent.Timeout(timeout, AssertionError(f"{text!r} not in {self.getvalue()!r}")):
            while text not in self.getvalue():
                self.changed.clear()
                self.changed.wait()


def test_errors_and_untrusted_text_print_readably():
    assert describe_error("rate_limited", "x", 1500) == "! x (retry in 2 seconds)"
    assert describe_error("rate_limited", "", 1500) == (
        "! rate limited: you are sending too fast, wait a moment (retry in 2 seconds)")
    assert clean("hi\x1b[2J\n") == "hi\ufffd[2J\ufffd"
    screen = Screen()
    session = ChatSession("alice", screen)
    for line in ("hello", "/dm alice", "/nope"):
        session.handle(line)
    assert screen.getvalue().splitlines() == [
        "! no conversation yet: /dm USER or /join r:ROOM", "! usage: /dm USER (another user)",
        "! unknown command /nope: /help lists them"]


def test_chat_sends_prints_and_quits_over_a_pipe(peer):
    read_fd, write_fd = os.pipe()
    screen = Screen()
    with os.fdopen(read_fd, "r") as stdin:
        done = gevent.spawn(run_chat, "alice", "127.0.0.1", peer.server.server_port, password="pw",
                            stdin=stdin, out=screen)
        os.write(write_fd, b"/dm bob\nhi there\n")
        screen.wait_for(f"\n{hhmm(0)} alice: hi there\n")
        os.write(write_fd, b"/join lobby\n")
        screen.wait_for("now talking in r:lobby")
        peer.write(msg("r:lobby", 6, body="yo"))
        screen.wait_for(f"\n{hhmm(0)} bob: yo\n")
        os.write(write_fd, b"/quit\n")
        assert done.get(timeout=3) == 0
    os.close(write_fd)
    assert screen.getvalue().count("alice: hi there") == 1 and "\x1b" not in screen.getvalue()
    assert peer.next_frame("send")["body"] == "hi there" and peer.next_frame("logout")
