"""Issue 3, point 4: system broadcasts (sys) on the real cluster.

``zonechat admin broadcast TEXT`` (the real CLI, as a subprocess) reaches every logged-in
session on both gates exactly once, from ``system``; sys seqs are gapless; any logged-in
user may sync sys; its history is bounded (``chat.room_history``, 30 in this module).
"""
from __future__ import annotations

import json

import pytest

from kit import admin, admin_cli, expect_error

HISTORY = 30


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"chat": {"room_history": HISTORY}})


def last_sys(c) -> int:
    return c.sync("sys", after=0, limit=1)["last_seq"]


def test_cli_broadcast_reaches_every_session_once(cluster, clients):
    everyone = [clients.user(gate=i % 2) for i in range(6)]
    not_logged_in = clients.connect(gate=1)
    out = admin_cli(cluster, "broadcast", "hi everyone")
    result = json.loads(out.stdout)
    assert result["conv"] == "sys" and isinstance(result["seq"], int) and result["cid"]
    for c in everyone:
        got = c.wait_msgs("sys", 1)
        assert [(m["conv"], m["seq"], m["from"], m["body"], m["cid"], m["ts"]) for m in got] == \
            [("sys", result["seq"], "system", "hi everyone", result["cid"], result["ts"])]
    second = json.loads(admin_cli(cluster, "broadcast", "again").stdout)
    assert second["seq"] == result["seq"] + 1
    for c in everyone:
        c.wait_msgs("sys", 2)
        c.fence()
        assert c.seqs("sys") == [result["seq"], second["seq"]]      # once each, in order
    not_logged_in.fence()
    assert not_logged_in.msgs() == []


def test_sys_seqs_are_gapless_and_arrive_in_order(clients):
    a, b = clients.user(gate=0), clients.user(gate=1)
    results = [admin(clients.cluster, "/v1/broadcast", {"text": f"n{i}"}) for i in range(8)]
    seqs = [r["seq"] for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    for c in (a, b):
        got = c.wait_msgs("sys", 8)
        c.fence()
        assert [m["seq"] for m in c.msgs("sys")] == seqs
        assert [m["body"] for m in got] == [f"n{i}" for i in range(8)]
        assert all(m["from"] == "system" for m in got)
    # the cid the operator side chose is kept
    mine = admin(clients.cluster, "/v1/broadcast", {"body": {"kind": "maintenance", "in": 5}, "cid": "op-42"})
    got = a.wait_msgs("sys", 9)[-1]
    assert (got["cid"], got["body"], got["seq"]) == ("op-42", {"kind": "maintenance", "in": 5}, mine["seq"])


def test_sync_sys_is_open_to_every_user_and_bounded(clients):
    c = clients.user(gate=1)                   # never joined anything
    first = None
    for i in range(HISTORY + 15):
        r = admin(clients.cluster, "/v1/broadcast", {"text": f"b{i}"})
        first = first or r["seq"]
    last = r["seq"]
    history = c.sync("sys", after=0, limit=500)
    assert history["last_seq"] == last
    assert [m["seq"] for m in history["msgs"]] == list(range(last - HISTORY + 1, last + 1))
    assert history["msgs"][-1]["body"] == f"b{HISTORY + 14}"
    page = c.sync("sys", after=last - 5)
    assert [m["seq"] for m in page["msgs"]] == list(range(last - 4, last + 1))
    fresh_login = clients.user(gate=0)
    assert fresh_login.welcome["convs"]["sys"] == last
    assert [m["seq"] for m in fresh_login.sync("sys", after=last - 3)["msgs"]] == [last - 2, last - 1, last]


def test_clients_cannot_send_to_sys(clients):
    c = clients.user()
    expect_error(c, "not_member", "send", conv="sys", cid="c1", body="x")
    before = last_sys(c)
    c.recv("sys", before + 100)                  # ignored, no reply, connection stays
    c.fence()
    assert last_sys(c) == before
    expect_error(clients.connect(), "auth_required", "sync", conv="sys", after=0)


def test_broadcast_without_text_is_refused(cluster):
    out = admin_cli(cluster, "broadcast", check=False)
    assert out.returncode != 0
    with pytest.raises(Exception) as info:
        admin(cluster, "/v1/broadcast", {})
    assert "bad_request" in str(info.value)
