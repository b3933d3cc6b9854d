"""Issue 2, point 6: the guarantees for DMs, against a whole cluster: durable ack (read back
from Redis itself), no duplicates on resend, gapless seq in send order, offline delivery
from the delivered cursor, recv / logout barrier / at-least-once, the 1,000-message replay
cap, sync limits and the 1 MiB history bound, and ``unavailable`` while the store is down.

The module's cluster raises the send rate (``gate.send_rate``/``send_burst`` 100,000) so
that 1,005 messages can be sent in one batch, runs Redis with ``appendfsync always`` (the
test default is everysec, so reading ``always`` back proves the config drives it), and
has ``gate.request_timeout`` 2 s (default 5) so the store-down tests answer sooner.
"""
import os
import signal
import time

import gevent
import pytest

from cluster.codec import encode_frame, packb
from cluster.convs import dm
from dc import keys
import kit
from kit import Raw, Users, pair, redis_client, register, stored_records, stored_seqs
from harness import poll_for

OVERRIDES = {"gate": {"send_rate": 100000, "send_burst": 100000, "request_timeout": 2},
             "redis": {"appendfsync": "always"}}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gcluster(start_cluster):
    return start_cluster(OVERRIDES)


@pytest.fixture(scope="module")
def r(gcluster):
    client = redis_client(gcluster)
    yield client
    client.close()


def msgs_of(bodies, conv=None):
    return [b for b in bodies if b.get("t") == "msg" and (conv is None or b.get("conv") == conv)]


def send_batch(conn: Raw, conv: str, n: int, prefix: str = "m", body=None, window: int = 200) -> list[dict]:
    """Pipelined sends (cids prefix-0...), at most ``window`` awaiting replies (the gate's
    max_inflight is 256); the replies in send order."""
    rids, replies = [], []
    for i in range(n):
        if len(rids) - len(replies) >= window:
            replies.append(conn.reply(rids[len(replies)], timeout=30))
        rids.append(conn.begin("send", conv=conv, cid=f"{prefix}-{i}",
                               body=f"{prefix} {i}" if body is None else body))
    replies += [conn.reply(rid, timeout=30) for rid in rids[len(replies):]]
    return replies


def replay_after_login(users: Users, user: str, conv: str, gate: int = 0):
    """Log ``user`` in; (connection, the msg pushes of conv up to a ping's pong)."""
    conn = users.relogin(user, gate=gate)
    rid = conn.begin("ping")
    pushed = []
    while True:
        body = conn.next(timeout=30)
        if body.get("rid") == rid:
            return conn, [m for m in pushed if m["conv"] == conv]
        if body.get("t") == "msg":
            pushed.append(body)


# -- durable ack -----------------------------------------------------------------------------
def test_redis_runs_with_aof_and_the_configured_fsync(gcluster, r):
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("appendfsync") == {"appendfsync": "always"}
    assert r.info("persistence")["aof_enabled"] == 1


def test_ack_means_stored_in_redis(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users)
        for i in range(1, 4):
            ack = a.send(conv, {"n": i, "text": f"durable {i}"}, cid=f"dur-{i}")
            # read right after the ack: the record and its seq are there
            record = stored_records(r, conv)[ack["seq"]]
            assert record == {"t": "msg", "conv": conv, "seq": i, "from": a.user, "ts": ack["ts"],
                              "body": {"n": i, "text": f"durable {i}"}, "cid": f"dur-{i}"}
            assert int(r.get(r.layout.seq(conv))) == i
            dedup = r.layout.dedup(conv, a.user, f"dur-{i}")
            assert r.get(dedup) == f"{i}:{ack['ts']}".encode()
            assert 86400 - 120 <= r.ttl(dedup) <= 86400               # remembered for 24 h
        # the stored record is byte for byte the push b got
        pushed = b.msgs(conv, 3)
        raw = r.hget(r.layout.messages(conv), 3)
        assert packb(pushed[2]) == raw
        assert r.sismember(keys.user_convs(a.user), conv) and r.sismember(keys.user_convs(b.user), conv)


# -- no duplicates ---------------------------------------------------------------------------
def test_resend_of_the_same_cid_returns_the_same_ack_and_stores_nothing(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        first = a.send(conv, "once", cid="dup-1")
        again = a.send(conv, "once", cid="dup-1")
        changed = a.send(conv, "a different body", cid="dup-1")    # same triple: same message
        for ack in (again, changed):
            assert (ack["t"], ack["seq"], ack["ts"], ack["cid"], ack["conv"]) == \
                ("ack", first["seq"], first["ts"], "dup-1", conv)
        assert stored_seqs(r, conv) == [1]
        assert stored_records(r, conv)[1]["body"] == "once"
        # after a reconnect (a new connection, a new session) and from the other gate
        a.close()
        a2 = users.relogin(a.user, gate=1)
        assert (a2.send(conv, "once", cid="dup-1")["seq"], a2.send(conv, "once", cid="dup-1")["ts"]) == \
            (first["seq"], first["ts"])
        # the cid is per sender and per conversation
        assert b.send(conv, "b's own", cid="dup-1")["seq"] == 2
        other = dm(a.user, register(gcluster))
        assert a2.send(other, "elsewhere", cid="dup-1")["seq"] == 1
        assert stored_seqs(r, conv) == [1, 2]
        # b saw a's message exactly once
        seen = msgs_of(b.fence(conv), conv)
        assert [m["seq"] for m in seen] == [1], seen


def test_pipelined_resends_in_one_batch_store_one_copy(gcluster, r):
    """The same cid several times in one pipelined burst (one zone tick): one seq."""
    with Users(gcluster) as users:
        a, b, conv = pair(users)
        rids = [a.begin("send", conv=conv, cid=cid, body=cid) for cid in ["x", "y", "x", "x", "z", "y"]]
        acks = [a.reply(rid) for rid in rids]
        assert [ack["seq"] for ack in acks] == [1, 2, 1, 1, 3, 2], acks
        assert stored_seqs(r, conv) == [1, 2, 3]
        got = msgs_of(b.fence(conv), conv)
        assert [m["cid"] for m in got] == ["x", "y", "z"]


# -- order -----------------------------------------------------------------------------------
def test_seq_is_gapless_and_in_send_order_under_concurrent_sends(gcluster, r):
    n = 150
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        jobs = [gevent.spawn(send_batch, conn, conv, n, prefix=conn.user) for conn in (a, b)]
        gevent.joinall(jobs, raise_error=True)
        acks_a, acks_b = jobs[0].value, jobs[1].value
        for acks in (acks_a, acks_b):
            assert all(x["t"] == "ack" for x in acks)
            seqs = [x["seq"] for x in acks]
            assert seqs == sorted(seqs) and len(set(seqs)) == n       # in the order sent
        assert sorted(x["seq"] for x in acks_a + acks_b) == list(range(1, 2 * n + 1))
        assert stored_seqs(r, conv) == list(range(1, 2 * n + 1))
        # each side receives the other's messages in seq order, each once, never its own
        for conn, others in ((a, acks_b), (b, acks_a)):
            got = conn.msgs(conv, n, timeout=30)
            assert [m["seq"] for m in got] == [x["seq"] for x in others]
            assert all(m["from"] != conn.user for m in got)
            assert msgs_of(conn.fence(conv)) == []
        history = []
        while len(history) < 2 * n:
            history += a.request("sync", conv=conv, after=len(history), limit=500)["msgs"]
        assert [m["seq"] for m in history] == list(range(1, 2 * n + 1))
        assert [m["cid"] for m in history if m["from"] == a.user] == [f"{a.user}-{i}" for i in range(n)]


# -- offline delivery, recv, logout ---------------------------------------------------------------
def test_offline_delivery_after_welcome_from_the_cursor_own_messages_included(gcluster):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        own = [b.send(conv, f"b before {i}") for i in range(2)]
        assert b.request("logout")["t"] == "ok"                  # without any recv
        acks = own + [a.send(conv, f"a while away {i}") for i in range(3)]
        b2, replay = replay_after_login(users, b.user, conv, gate=0)
        assert b2.welcome["convs"][conv] == 5
        assert [m["seq"] for m in replay] == [1, 2, 3, 4, 5]
        assert [m["from"] for m in replay] == [b.user] * 2 + [a.user] * 3
        assert [m["cid"] for m in replay] == [x["cid"] for x in acks]
        assert b2.arrivals.index("welcome") < b2.arrivals.index("msg")   # welcome comes first
        live = a.send(conv, "live again")
        assert b2.expect("msg", conv=conv)["seq"] == live["seq"] == 6


def test_recv_moves_the_cursor_and_logout_waits_for_it(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        for i in range(5):
            a.send(conv, i)
        assert [m["seq"] for m in b.msgs(conv, 5)] == [1, 2, 3, 4, 5]
        b.write({"t": "recv", "conv": conv, "seq": 3})
        assert b.request("logout")["t"] == "ok"
        assert int(r.hget(keys.cursors(b.user), conv)) == 3        # stored before the ok
        _, replay = replay_after_login(users, b.user, conv, gate=1)
        assert [m["seq"] for m in replay] == [4, 5]


def test_logout_is_a_barrier_for_every_earlier_recv(gcluster, r):
    """recv + logout in one write, then at once a login on the other gate: nothing at or
    below the recv'd seq is replayed. Repeated, so a race would show."""
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        user, done, conn = b.user, 0, b
        for round_ in range(6):
            acks = [a.send(conv, f"r{round_} {i}") for i in range(3 + round_)]
            last = acks[-1]["seq"]
            if round_ == 0:
                assert [m["seq"] for m in conn.msgs(conv, len(acks))] == [x["seq"] for x in acks]
            frames = [{"t": "recv", "conv": conv, "seq": s} for s in range(done + 1, last)]   # one by one...
            frames.append({"t": "recv", "conv": conv, "seq": last - 1})                        # ...up to last - 1
            frames.append({"t": "logout", "rid": 999})
            conn.write_raw(b"".join(encode_frame(f) for f in frames))
            assert conn.reply(999)["t"] == "ok"
            assert int(r.hget(keys.cursors(user), conv)) == last - 1
            conn, replay = replay_after_login(users, user, conv, gate=round_ % 2)
            assert [m["seq"] for m in replay] == [last], (round_, replay)
            done = last - 1


def test_at_least_once_without_recv(gcluster):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        acks = [a.send(conv, f"unconfirmed {i}") for i in range(4)]
        assert [m["seq"] for m in b.msgs(conv, 4)] == [1, 2, 3, 4]
        b.close()                                         # dropped: no recv, no logout
        b2, replay = replay_after_login(users, b.user, conv, gate=1)
        assert [m["seq"] for m in replay] == [1, 2, 3, 4]
        assert [m["cid"] for m in replay] == [x["cid"] for x in acks]
        # kicked by a new login without a recv: pushed again once more
        b3, replay = replay_after_login(users, b.user, conv, gate=0)
        assert b2.wait_closed() == [{"t": "kicked", "reason": "session_replaced"}]
        assert [m["seq"] for m in replay] == [1, 2, 3, 4]
        # a logout without recv keeps them unread too
        assert b3.request("logout")["t"] == "ok"
        _, replay = replay_after_login(users, b.user, conv, gate=1)
        assert [m["seq"] for m in replay] == [1, 2, 3, 4]


def test_recv_is_clamped_never_moves_back_and_is_ignored_where_it_does_not_apply(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        for i in range(3):
            a.send(conv, i)
        b.msgs(conv, 3)
        b.write({"t": "recv", "conv": conv, "seq": 10 ** 9})      # above the last: clamped to 3
        b.write({"t": "recv", "conv": conv, "seq": 1})            # never moves back
        b.write({"t": "recv", "conv": "sys", "seq": 5})           # ignored
        b.write({"t": "recv", "conv": "r:somewhere", "seq": 5})   # ignored
        x, y = register(gcluster), register(gcluster)
        b.write({"t": "recv", "conv": dm(x, y), "seq": 5})        # a DM of others: ignored
        assert b.request("logout")["t"] == "ok"
        assert [m for m in b.wait_closed() if m.get("t") != "ok"] == []      # recv has no reply
        cursors = {k.decode(): int(v) for k, v in r.hgetall(keys.cursors(b.user)).items()}
        assert cursors == {conv: 3}
        assert not r.hexists(keys.cursors(b.user), dm(x, y))
        a.send(conv, "the fourth")
        _, replay = replay_after_login(users, b.user, conv)
        assert [m["seq"] for m in replay] == [4]                   # clamping kept seq 4 unread


# -- replay cap and sync limits --------------------------------------------------------------------
def test_replay_is_capped_at_1000_per_conversation_and_sync_gets_the_rest(gcluster):
    with Users(gcluster) as users:
        a = users.new("a", 0)
        b_name = register(gcluster)
        conv = dm(a.user, b_name)
        acks = send_batch(a, conv, 1005)
        assert [x.get("seq") for x in acks] == list(range(1, 1006))
        # a second, small conversation is replayed in full next to the capped one
        c = users.new("c", 1)
        small = dm(b_name, c.user)
        c.send(small, "small one")
        b = users.relogin(b_name, gate=1)
        assert b.welcome["convs"][conv] == 1005 and b.welcome["convs"][small] == 1
        rid = b.begin("ping")
        pushed = []
        while (body := b.next(timeout=30)).get("rid") != rid:
            if body.get("t") == "msg":
                pushed.append(body)
        assert [m["seq"] for m in pushed if m["conv"] == conv] == list(range(1, 1001))
        assert [m["seq"] for m in pushed if m["conv"] == small] == [1]
        rest = b.request("sync", conv=conv, after=1000)
        assert [m["seq"] for m in rest["msgs"]] == [1001, 1002, 1003, 1004, 1005]
        assert rest["last_seq"] == 1005
        # sync limits: default 100, at most 500
        assert [m["seq"] for m in b.request("sync", conv=conv, after=0)["msgs"]] == list(range(1, 101))
        assert len(b.request("sync", conv=conv, after=10, limit=500)["msgs"]) == 500
        big = b.request("sync", conv=conv, after=10, limit=100000)["msgs"]
        assert [m["seq"] for m in big] == list(range(11, 511))
        assert [m["seq"] for m in b.request("sync", conv=conv, after=1003, limit=500)["msgs"]] == [1004, 1005]


def test_sync_history_frame_stays_under_1_mib(gcluster):
    with Users(gcluster) as users:
        a, b, conv = pair(users)
        body = "x" * 4093                                          # 4,096 bytes encoded
        acks = send_batch(a, conv, 300, body=body)
        assert all(x["t"] == "ack" for x in acks)
        page = b.request("sync", conv=conv, after=0, limit=500)
        assert page["last_seq"] == 300
        count = len(page["msgs"])
        assert 200 <= count < 300                                  # stopped early...
        assert len(packb(page)) < MIB                              # ...under 1 MiB
        assert [m["seq"] for m in page["msgs"]] == list(range(1, count + 1))
        got = page["msgs"]
        while len(got) < 300:                                      # page on to last_seq
            more = b.request("sync", conv=conv, after=got[-1]["seq"], limit=500)["msgs"]
            assert more
            got += more
        assert [m["seq"] for m in got] == list(range(1, 301))


# -- unavailable ------------------------------------------------------------------------------------
class StoppedRedis:
    """SIGSTOP the cluster's Redis for the ``with`` block; SIGCONT always, then wait for PING."""

    def __init__(self, cluster, r):
        self.cluster, self.r, self.pid = cluster, r, cluster.pid("redis")

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)
        poll_for(self._pings, 20, "redis answering again")

    def _pings(self):
        try:
            return self.r.ping()
        except Exception:
            return False


def resend_until_acked(conn: Raw, conv: str, cid: str, body, timeout: float = 20) -> dict:
    return kit.resend_until_acked(conn, conv, cid, body, timeout, interval=0.5)


def test_unavailable_while_the_store_is_down_then_a_resend_stores_one_copy(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        first = a.send(conv, "before the outage")
        assert first["seq"] == 1 and b.expect("msg", conv=conv)["seq"] == 1
        with StoppedRedis(gcluster, r):
            start = time.monotonic()
            reply = a.send(conv, "during the outage", cid="outage-1")
            assert (reply["t"], reply["code"]) == ("error", "unavailable"), reply
            assert isinstance(reply.get("retry_ms"), int) and reply["retry_ms"] > 0
            assert time.monotonic() - start < 8
            assert a.is_open() and b.is_open()                    # connections stay up
        ack = resend_until_acked(a, conv, "outage-1", "during the outage")
        assert ack["seq"] == 2
        records = stored_records(r, conv)
        assert sorted(records) == [1, 2]
        assert [rec["cid"] for rec in records.values()].count("outage-1") == 1
        # b gets it once; a gets no echo; the next message continues the seq
        got = msgs_of(b.fence(conv), conv)
        assert [m["seq"] for m in got] == [2] and got[0]["cid"] == "outage-1"
        assert msgs_of(a.fence(conv)) == []
        assert a.send(conv, "after")["seq"] == 3


def test_unavailable_means_not_stored(gcluster, r):
    with Users(gcluster) as users:
        a, b, conv = pair(users, (0, 1))
        assert a.send(conv, "zone knows both users now")["seq"] == 1
        with StoppedRedis(gcluster, r):
            reply = a.send(conv, "never stored?", cid="ghost-1")
            assert reply.get("code") == "unavailable", reply
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:                         # give a late write its chance
            assert [rec["cid"] for rec in stored_records(r, conv).values()].count("ghost-1") == 0
            time.sleep(0.2)
