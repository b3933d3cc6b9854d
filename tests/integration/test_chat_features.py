"""Issue 15: edit and recall, unread counts and read receipts, typing, presence, passive
room viewers — protocol v1 extensions (docs/protocol.md §9), over both gates.

One module cluster with short windows (edit 3 s, recall 2 s, passive 0.3 s) so "too late"
and digests are seen quickly. ``kit.Raw`` shows every body as the server sent it.
"""
import itertools
import json
import time
import uuid

import pytest
import websocket

from cluster.convs import dm
from harness import poll_for
from dc import keys
from kit import PASSWORD, Users, admin_cli, fresh, pair, redis_client
from kit import frame as frame_of

CHAT = {"edit_window": 3, "recall_window": 2, "passive_window": 0.3, "typing_interval": 0.5,
        "receipts_max_members": 3, "typing_max_members": 3}


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"chat": CHAT})


def cid() -> str:
    return uuid.uuid4().hex


def edit(conn, conv, seq, body, c=None):
    return conn.request("edit", conv=conv, cid=c or cid(), seq=seq, body=body)


def recall(conn, conv, seq, c=None):
    return conn.request("recall", conv=conv, cid=c or cid(), seq=seq)


# -- 1. edit and recall ---------------------------------------------------------------------
@pytest.mark.parametrize("gates", [(0, 1), (1, 0)], ids=["g1-g2", "g2-g1"])
def test_edit_and_recall_are_sequenced_events(cluster, gates):
    with Users(cluster) as users:
        a, b, conv = pair(users, gates)
        first = a.send(conv, "helo")
        a.send(conv, "second")
        assert [m["seq"] for m in b.msgs(conv, 2)] == [1, 2]
        ack = edit(a, conv, 1, "hello")
        assert (ack["t"], ack["seq"]) == ("ack", 3), ack
        ev = b.expect("msg", conv=conv)
        assert (ev["seq"], ev["kind"], ev["ref"], ev["body"], ev["from"]) == (3, "edit", 1, "hello", a.user)
        gone = recall(a, conv, 2)
        assert gone["seq"] == 4, gone
        ev = b.expect("msg", conv=conv)
        assert (ev["seq"], ev["kind"], ev["ref"], ev["body"]) == (4, "recall", 2, None)
        history = b.request("sync", conv=conv, after=0)
        one, two = history["msgs"][0], history["msgs"][1]
        assert (one["body"], one["edited"], one["ts"]) == ("hello", ack["ts"], first["ts"])
        assert (two["body"], two["recalled"]) == (None, True)
        assert [m["seq"] for m in history["msgs"]] == [1, 2, 3, 4]


def test_edit_errors(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        a.send(conv, "mine")
        b.send(conv, "yours")
        assert edit(a, conv, 2, "x")["code"] == "not_sender"
        assert edit(a, conv, 9, "x")["code"] == "not_found"
        assert edit(a, conv, 0, "x")["code"] == "bad_request"
        assert a.request("edit", conv=conv, cid=cid(), seq=1)["code"] == "bad_request"
        assert edit(a, conv, 1, "x" * 5000)["code"] == "too_large"
        c = users.new("c")
        assert edit(c, conv, 1, "x")["code"] == "not_member"
        assert recall(a, conv, 1)["t"] == "ack"
        assert edit(a, conv, 1, "again")["code"] == "not_found"        # recalled
        assert edit(a, conv, 3, "event")["code"] == "not_found"        # an event is no message
        late = a.send(conv, "old")
        poll_for(lambda: time.time() * 1000 > late["ts"] + 3100, 10, "the edit window to pass")
        assert edit(a, conv, late["seq"], "x")["code"] == "too_late"
        assert recall(a, conv, late["seq"])["code"] == "too_late"
        assert [m["seq"] for m in b.request("sync", conv=conv, after=0)["msgs"]] == [1, 2, 3, 4]


def test_a_resent_edit_answers_its_first_ack(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        a.send(conv, "one")
        c = cid()
        first = recall(a, conv, 1, c)
        again = recall(a, conv, 1, c)
        assert (again["seq"], again["ts"]) == (first["seq"], first["ts"])
        assert [m["seq"] for m in b.msgs(conv, 2)] == [1, 2]
        assert b.request("sync", conv=conv, after=0)["last_seq"] == 2


def test_edit_and_recall_reach_an_offline_member_in_order(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        for text in ("one", "two", "three"):
            a.send(conv, text)
        b.msgs(conv, 3)
        b.write({"t": "recv", "conv": conv, "seq": 3})
        assert b.request("logout")["t"] == "ok"
        edit(a, conv, 1, "ONE")
        recall(a, conv, 2)
        back = users.relogin(b.user, gate=1)
        assert back.welcome["convs"][conv] == 5
        assert back.welcome["unread"][conv] == 2 and back.welcome["read"][conv] == 3
        got = back.msgs(conv, 2)
        assert [(m["seq"], m["kind"], m["ref"]) for m in got] == [(4, "edit", 1), (5, "recall", 2)]


@pytest.mark.parametrize("kind", ["group", "room"])
def test_edit_and_recall_in_groups_and_rooms(cluster, kind):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        if kind == "group":
            conv = "g:" + fresh("g")
            assert a.request("group_create", group=conv, members=[b.user])["t"] == "ok"
        else:
            conv = "r:" + fresh("r")
            for conn in (a, b):
                assert conn.request("join", room=conv)["t"] == "joined"
        a.send(conv, "typo")
        b.expect("msg", conv=conv, seq=1)
        assert edit(a, conv, 1, "fixed")["seq"] == 2
        assert b.expect("msg", conv=conv, seq=2)["kind"] == "edit"
        assert recall(b, conv, 1)["code"] == "not_sender"
        assert recall(a, conv, 1)["seq"] == 3
        assert b.expect("msg", conv=conv, seq=3)["kind"] == "recall"


def test_an_operator_recall_leaves_join_recent_and_sync(cluster):
    with Users(cluster) as users:
        a = users.new("a", 0)
        room = "r:" + fresh("r")
        a.request("join", room=room)
        a.send(room, "spam")
        a.send(room, "fine")
        admin_cli(cluster, "recall", room, "1")
        viewer = users.new("v", 1)
        joined = viewer.request("join", room=room)
        spam = joined["recent"][0]
        assert (spam["seq"], spam["body"], spam["recalled"]) == (1, None, True)
        assert joined["recent"][2]["from"] == "system" and joined["recent"][2]["kind"] == "recall"
        assert viewer.request("sync", conv=room, after=0)["msgs"][0]["recalled"] is True
        conv = dm(a.user, viewer.user)
        old = a.send(conv, "ancient")
        poll_for(lambda: time.time() * 1000 > old["ts"] + 2100, 10, "the recall window to pass")
        out = json.loads(admin_cli(cluster, "recall", conv, str(old["seq"])).stdout)
        assert (out["ref"], out["seq"]) == (old["seq"], old["seq"] + 1)
        missing = admin_cli(cluster, "recall", conv, "99", check=False)
        assert missing.returncode != 0 and "not_found" in missing.stdout + missing.stderr


# -- 2. unread counts and read receipts -------------------------------------------------------
def test_welcome_counts_unread_and_the_read_cursor(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        for n in range(4):
            a.send(conv, f"m{n}")
        b.msgs(conv, 4)
        b.write({"t": "recv", "conv": conv, "seq": 1})
        assert b.request("logout")["t"] == "ok"
        back = users.relogin(b.user, gate=0)
        assert back.welcome["convs"][conv] == 4
        assert (back.welcome["unread"][conv], back.welcome["read"][conv]) == (3, 1)
        assert a.request("sync", conv=conv, after=0)["read"] == {a.user: 0, b.user: 1}


@pytest.mark.parametrize("kind", ["dm", "group"])
def test_read_receipts_cross_gates(cluster, kind):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        if kind == "dm":
            conv = dm(a.user, b.user)
        else:
            conv = "g:" + fresh("g")
            assert a.request("group_create", group=conv, members=[b.user])["t"] == "ok"
        a.send(conv, "one")
        a.send(conv, "two")
        b.msgs(conv, 2)
        b.write({"t": "recv", "conv": conv, "seq": 1})
        b.write({"t": "recv", "conv": conv, "seq": 2})
        b.write({"t": "recv", "conv": conv, "seq": 99})      # never given: not pushed
        read = a.expect("read", conv=conv)
        assert read["user"] == b.user and read["seq"] in (1, 2), read
        if read["seq"] == 1:
            assert a.expect("read", conv=conv)["seq"] == 2
        assert [x for x in a.fence(conv) if x.get("t") == "read"] == []
        poll_for(lambda: a.request("sync", conv=conv, after=0)["read"].get(b.user) == 2, 10,
                 "b's cursor in a's sync")


def test_no_read_receipts_past_receipts_max_members(cluster):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        others = [users.new("c", 0).user, users.new("d", 1).user]
        group = "g:" + fresh("g")
        assert a.request("group_create", group=group, members=[b.user, *others])["t"] == "ok"
        a.send(group, "to four")
        b.expect("msg", conv=group, seq=1)
        b.write({"t": "recv", "conv": group, "seq": 1})
        store = redis_client(cluster)
        poll_for(lambda: store.hget(keys.cursors(b.user), group) == b"1", 10, "b's cursor stored")
        assert "read" not in a.request("sync", conv=group, after=0)
        b.write({"t": "typing", "conv": group})     # after the read on the same path
        a.expect("typing", conv=group)
        assert not [x for x in a.backlog if x.get("t") == "read"], a.backlog


# -- 3. typing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dm", "group", "room"])
def test_typing_reaches_the_other_members(cluster, kind):
    with Users(cluster) as users:
        a, b = users.new("a", 0), users.new("b", 1)
        if kind == "dm":
            conv = dm(a.user, b.user)
        elif kind == "group":
            conv = "g:" + fresh("g")
            assert a.request("group_create", group=conv, members=[b.user])["t"] == "ok"
        else:
            conv = "r:" + fresh("r")
            for conn in (a, b):
                conn.request("join", room=conv)
        a.write({"t": "typing", "conv": conv})
        assert b.expect("typing", conv=conv) == {"t": "typing", "conv": conv, "user": a.user}
        again = a.request("typing", conv=conv)
        assert again["code"] == "rate_limited" and again["retry_ms"] > 0, again
        assert [x for x in a.fence(conv) if x.get("t") == "typing"] == []      # no echo


def test_no_typing_in_rooms_at_typing_max_members(cluster):
    with Users(cluster) as users:
        room = "r:" + fresh("r")
        a, b, c = users.new("a", 0), users.new("b", 1), users.new("c", 1)
        for conn in (a, b, c):
            conn.request("join", room=room)
        a.write({"t": "typing", "conv": room})          # 3 members: not passed on
        typed = time.monotonic()
        c.request("leave", room=room)
        poll_for(lambda: a.request("room_info", room=room)["members"] == 2, 10, "c's leave to count")
        poll_for(lambda: time.monotonic() > typed + CHAT["typing_interval"] + 0.1, 10, "the typing interval")
        a.write({"t": "typing", "conv": room})
        assert b.expect("typing", conv=room)["user"] == a.user
        assert not [x for x in b.backlog if x.get("t") == "typing"], b.backlog


def test_typing_errors(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        c = users.new("c")
        assert c.request("typing", conv=conv)["code"] == "not_member"
        assert c.request("typing", conv="r:" + fresh("r"))["code"] == "not_member"
        assert c.request("typing", conv="sys")["code"] == "not_member"
        assert c.request("typing", conv="x:y")["code"] == "bad_conv"


# -- 4. presence -------------------------------------------------------------------------------
def test_presence_of_friends_across_gates(cluster):
    with Users(cluster) as users:
        a = users.new("a", 0)
        b, c = users.new("b", 1, login=False), users.new("c", 1)
        got = a.request("presence_sub", users=[b.user, c.user])
        assert got["users"] == {b.user: "offline", c.user: "online"}, got
        b.login(b.user)
        assert a.expect("presence", user=b.user)["status"] == "online"
        assert c.request("set_status", text="in match")["t"] == "ok"
        push = a.expect("presence", user=c.user)
        assert (push["status"], push["text"]) == ("online", "in match")
        assert c.request("set_status", hidden=True)["t"] == "ok"
        assert a.expect("presence", user=c.user)["status"] == "offline"
        b.request("logout")
        assert a.expect("presence", user=b.user)["status"] == "offline"
        again = users.relogin(c.user, gate=0)          # hidden stays with the account
        assert again.welcome["status"] == {"text": "in match", "hidden": True}
        assert a.request("presence_sub", users=[c.user])["users"] == {c.user: "offline"}


def test_presence_errors(cluster):
    with Users(cluster) as users:
        a = users.new("a")
        assert a.request("presence_sub", users=["x"] * 201)["code"] == "too_large"
        assert a.request("presence_sub", users=["no spaces"])["code"] == "bad_request"
        assert a.request("presence_sub", users="alice")["code"] == "bad_request"
        assert a.request("set_status", text="x" * 65)["code"] == "bad_request"
        assert a.request("set_status")["code"] == "bad_request"
        codes = [a.request("set_status", text="s")["t"] for _ in range(25)]
        assert "error" in codes and codes.index("error") <= 20


def test_presence_pushes_go_on_after_a_center_restart(cluster):
    with Users(cluster) as users:
        a = users.new("a", 0)
        b = users.new("b", 1, login=False)
        away, plain = users.new("c", 1), users.new("d", 0)      # online across the restart
        assert away.request("set_status", text="afk")["t"] == "ok"
        assert a.request("presence_sub", users=[b.user])["users"] == {b.user: "offline"}
        cluster.restart("center1")
        poll_for(lambda: a.request("room_info", room="r:" + fresh("r"))["t"] == "room_info", 30,
                 "center to answer again")
        wanted = {"t": "presence", "users": {away.user: "online", plain.user: "online"},
                  "texts": {away.user: "afk"}}
        poll_for(lambda: {k: v for k, v in a.request("presence_sub", users=[away.user, plain.user]).items()
                          if k != "rid"} == wanted, 15, "the gates' sessions and statuses back at center",
                 interval=1.0)
        assert a.request("presence_sub", users=[b.user])["users"] == {b.user: "offline"}
        b.login(b.user)
        assert a.expect("presence", user=b.user, timeout=20)["status"] == "online"
        b.close()
        assert a.expect("presence", user=b.user)["status"] == "offline"
        assert a.request("presence_sub", users=[b.user])["users"] == {b.user: "offline"}


# -- 5. passive viewers ------------------------------------------------------------------------
def digests_until(conn, room: str, top: int) -> list[dict]:
    """Every digest of ``room`` up to the one covering ``top``; no room msg meanwhile."""
    got = []
    while not got or got[-1]["to_seq"] < top:
        body = conn.take(lambda b: b.get("conv") == room and b.get("t") in ("digest", "msg"))
        assert body["t"] == "digest", body
        got.append(body)
    return got


def test_passive_digests_cover_every_seq_once(cluster):
    with Users(cluster) as users:
        room = "r:" + fresh("r")
        a = users.new("a", 0)
        a.request("join", room=room)
        a.send(room, "before")
        viewer = users.new("v", 1)
        joined = viewer.request("join", room=room, mode="passive")
        assert (joined["t"], joined["last_seq"], joined["members"]) == ("joined", 1, 2)
        started = time.monotonic()
        digests, top = [], 1
        for burst in range(4):
            for n in range(12):
                top = a.send(room, f"b{burst}-{n}")["seq"]
            digests += digests_until(viewer, room, top)
        elapsed = time.monotonic() - started
        assert digests[0]["from_seq"] == 2
        for before, after in zip(digests, digests[1:]):
            assert after["from_seq"] == before["to_seq"] + 1, digests
        assert digests[-1]["to_seq"] == top == 49
        for d in digests:
            assert d["count"] == d["to_seq"] - d["from_seq"] + 1
            assert 1 <= len(d["recent"]) <= 5
            assert [m["seq"] for m in d["recent"]] == list(range(d["to_seq"] - len(d["recent"]) + 1, d["to_seq"] + 1))
        assert len(digests) <= elapsed / CHAT["passive_window"] + 2, (len(digests), elapsed)
        assert a.request("room_info", room=room)["members"] == 2


def test_focus_backfills_exactly_then_goes_live(cluster):
    with Users(cluster) as users:
        room = "r:" + fresh("r")
        a = users.new("a", 0)
        a.request("join", room=room)
        viewer = users.new("v", 1)
        viewer.request("join", room=room, mode="passive")
        for n in range(3):
            a.send(room, f"seen-{n}")
        covered = digests_until(viewer, room, 3)[-1]["to_seq"]
        for n in range(4):
            a.send(room, f"missed-{n}")
        history = viewer.request("focus", room=room)
        assert history["t"] == "history" and history["conv"] == room, history
        backfill = [m["seq"] for m in history["msgs"]]
        assert backfill == list(range(covered + 1, history["last_seq"] + 1))
        for n in range(3):
            a.send(room, f"live-{n}")
        live = []
        while not live or live[-1] < 10:
            body = viewer.take(lambda b: b.get("conv") == room and b.get("t") in ("digest", "msg"))
            assert body["t"] == "msg", body         # active again: no digest after the focus
            live.append(body["seq"])
        assert backfill + [s for s in live if s > history["last_seq"]] == list(range(covered + 1, 11))
        assert not [s for s in live if s <= history["last_seq"]], (live, history["last_seq"])
        assert viewer.request("focus", room="r:" + fresh("r"))["code"] == "not_member"
        assert viewer.request("join", room=room, mode="lurk")["code"] == "bad_request"


# -- the same over WebSocket (JSON text) ---------------------------------------------------------
class WsUser:
    """A WebSocket text (JSON) client through websocket-client: requests by rid, the rest kept."""

    def __init__(self, cluster, gate: str):
        host, port = cluster.ws_addrs[gate]
        self.ws = websocket.create_connection(f"ws://{host}:{port}/ws", timeout=10)
        self.rids, self.backlog = itertools.count(1), []

    def request(self, t: str, **fields) -> dict:
        rid = next(self.rids)
        self.ws.send(json.dumps({"t": t, "rid": rid, **fields}))
        return self.take(lambda b: b.get("rid") == rid)

    def take(self, pred) -> dict:
        for i, body in enumerate(self.backlog):
            if pred(body):
                return self.backlog.pop(i)
        while True:
            body = json.loads(self.ws.recv())
            if pred(body):
                return body
            self.backlog.append(body)

    def expect(self, t: str, **match) -> dict:
        return self.take(lambda b: b.get("t") == t and all(b.get(k) == v for k, v in match.items()))


def test_every_new_push_over_websocket_json(cluster):
    with Users(cluster) as users:
        a = users.new("a", 0)
        name = fresh("w")
        assert a.request("register", user=name, password=PASSWORD)["t"] == "ok"
        assert a.request("presence_sub", users=[name])["users"] == {name: "offline"}
        w = WsUser(cluster, "gate2")
        try:
            welcome = w.request("login", user=name, password=PASSWORD)
            assert welcome["unread"] == {} and welcome["status"] == {"text": "", "hidden": False}
            assert a.expect("presence", user=name)["status"] == "online"
            conv = dm(a.user, name)
            a.send(conv, "hi")
            assert w.expect("msg", conv=conv, seq=1)["body"] == "hi"
            edit(a, conv, 1, "hello")
            ev = w.expect("msg", conv=conv, seq=2)
            assert (ev["kind"], ev["ref"], ev["body"]) == ("edit", 1, "hello")
            a.write({"t": "typing", "conv": conv})
            assert w.expect("typing", conv=conv)["user"] == a.user
            w.ws.send(json.dumps({"t": "recv", "conv": conv, "seq": 2}))
            assert a.expect("read", conv=conv) == {"t": "read", "conv": conv, "user": name, "seq": 2}
            assert w.request("recall", conv=conv, cid="r1", seq=1)["code"] == "not_sender"
            room = "r:" + fresh("r")
            a.request("join", room=room)
            assert w.request("join", room=room, mode="passive")["t"] == "joined"
            a.send(room, "to the audience")
            digest = w.expect("digest", conv=room)
            assert (digest["from_seq"], digest["to_seq"], digest["count"]) == (1, 1, 1)
            assert digest["recent"][0]["body"] == "to the audience"
        finally:
            w.ws.close()
        assert a.expect("presence", user=name)["status"] == "offline"


def test_a_recall_resent_at_once_and_room_moderation(cluster):
    """The same recall twice in one write (one zone tick, most likely) answers one ack twice;
    duplicate suppression and slow mode judge messages, not edits and recalls."""
    with Users(cluster) as users:
        room = "r:" + fresh("r")
        a = users.new("a", 0)
        a.request("join", room=room)
        a.send(room, "one")
        a.send(room, "two")
        admin_cli(cluster, "dups", room, "60")
        admin_cli(cluster, "slow", room, "60")
        c = cid()
        a.write_raw(b"".join(frame_of({"t": "recall", "rid": rid, "conv": room, "cid": c, "seq": 1})
                             for rid in (901, 902)))
        first, again = a.reply(901), a.reply(902)
        assert first["t"] == "ack" and (again["seq"], again["ts"]) == (first["seq"], first["ts"]), (first, again)
        assert recall(a, room, 2)["t"] == "ack"             # not "you just said that"
        assert edit(a, room, first["seq"] - 1, "x")["code"] == "not_found"     # 2 is recalled


def test_two_quick_status_changes_both_hold(cluster):
    with Users(cluster) as users:
        a = users.new("a", 0)
        a.write_raw(frame_of({"t": "set_status", "rid": 801, "hidden": True})
                    + frame_of({"t": "set_status", "rid": 802, "text": "in match"}))
        assert a.reply(801)["t"] == "ok" and a.reply(802)["t"] == "ok"
        a.request("logout")
        again = users.relogin(a.user, gate=1)
        assert again.welcome["status"] == {"text": "in match", "hidden": True}
