"""Issue 15: edit and recall, unread counts and read receipts, typing, presence, passive
room viewers — protocol v1 extensions (docs/protocol.md §9), over both gates.

One module cluster with short windows (edit 3 s, recall 2 s, passive 0.3 s) so "too late"
and digests are seen quickly. ``kit.Raw`` shows every body as the server sent it.
"""
import json
import time
import uuid

import pytest

from cluster.convs import dm
from harness import poll_for
from kit import Users, admin, admin_cli, fresh, pair

CHAT = {"edit_window": 3, "recall_window": 2, "passive_window": 0.3, "typing_interval": 0.5}


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
