"""Issue 3, point 1: groups (g:) against the real cluster.

group_create / group_add / group_remove / group_leave with every error code the contract
lists, owner hand-over and deletion, and the DM guarantees for groups: durable ack,
dedup, gapless seq, offline delivery from the cursor, a new member's cursor at the
group's last seq, nothing for a removed member, welcome.convs listing groups.
"""
from __future__ import annotations

import gevent
import pytest

from client import dm_conv
from dc import keys
from kit import admin, expect_error, expect_ok, fresh, redis_client, zone_of


def group_of(owner, *members, name: str | None = None) -> str:
    g = f"g:{name or fresh('grp')}"
    expect_ok(owner, "group_create", group=g, members=[m.user if hasattr(m, "user") else m for m in members])
    return g


# -- requests and their errors ------------------------------------------------------------
def test_group_create_ok_exists_no_such_user(clients):
    o, a = clients.user(), clients.user(gate=1)
    g = group_of(o, a)
    expect_error(a, "exists", "group_create", group=g, members=[])
    expect_error(o, "exists", "group_create", group=g, members=[o.user])
    g2 = f"g:{fresh('grp')}"
    expect_error(o, "no_such_user", "group_create", group=g2, members=[a.user, fresh("ghost")])
    # the refused create left nothing behind: the group does not exist
    expect_error(o, "not_member", "send", conv=g2, cid="c1", body="x")
    expect_ok(o, "group_create", group=g2, members=[a.user, a.user, o.user])   # duplicates harmless
    assert a.send(g2, "hi")["seq"] == 1


@pytest.mark.parametrize("t, fields, code", [
    ("group_create", {"group": "r:room", "members": []}, "bad_conv"),
    ("group_create", {"group": "g:", "members": []}, "bad_conv"),
    ("group_create", {"group": 5, "members": []}, "bad_request"),
    ("group_create", {"group": "g:x"}, "bad_request"),
    ("group_create", {"group": "g:x", "members": "bob"}, "bad_request"),
    ("group_add", {"group": "g:x"}, "bad_request"),
    ("group_remove", {"group": "d:a:b", "user": "a"}, "bad_conv"),
    ("group_leave", {}, "bad_request"),
])
def test_group_request_validation(clients, t, fields, code):
    c = clients.user()
    expect_error(c, code, t, **fields)
    c.fence()                               # the connection stays up


def test_group_requests_need_login(clients):
    c = clients.connect()
    expect_error(c, "auth_required", "group_create", group="g:x", members=[])
    expect_error(c, "auth_required", "group_leave", group="g:x")


def test_group_add_and_remove_owner_rules(clients):
    o, a, b = clients.user(), clients.user(gate=1), clients.user()
    c_name, outsider = clients.register(), clients.user(gate=1)
    g = group_of(o, a)
    expect_ok(o, "group_add", group=g, user=b.user)
    expect_ok(o, "group_add", group=g, user=b.user)                   # again: ok
    expect_ok(o, "group_add", group=g, user=o.user)                   # the owner himself: ok
    expect_error(a, "not_owner", "group_add", group=g, user=c_name)
    expect_error(o, "no_such_user", "group_add", group=g, user=fresh("ghost"))
    expect_error(outsider, "not_member", "group_add", group=g, user=c_name)
    expect_error(a, "not_owner", "group_remove", group=g, user=b.user)
    expect_error(o, "not_member", "group_remove", group=g, user=c_name)   # exists, not in it
    expect_error(o, "no_such_user", "group_remove", group=g, user=fresh("ghost"))
    expect_error(outsider, "not_member", "group_remove", group=g, user=a.user)
    expect_ok(o, "group_remove", group=g, user=b.user)
    expect_error(o, "not_member", "group_remove", group=g, user=b.user)   # removed already
    # membership holds on every gate: b (removed) cannot send, a (added) can
    expect_error(b, "not_member", "send", conv=g, cid="b1", body="x")
    assert a.send(g, "still here")["seq"] == 1


def test_group_leave_hands_over_and_deletes(clients):
    o, a, b = clients.user(), clients.user(gate=1), clients.user()
    x, y = clients.user(gate=1), clients.user()
    g = group_of(o, a, b)                     # join order: o, a, b
    expect_error(x, "not_member", "group_leave", group=g)
    expect_ok(o, "group_leave", group=g)
    expect_error(o, "not_member", "group_leave", group=g)
    expect_error(o, "not_member", "send", conv=g, cid="o1", body="x")
    # a, the longest-standing member, owns it now
    expect_error(b, "not_owner", "group_add", group=g, user=x.user)
    expect_ok(a, "group_add", group=g, user=x.user)                   # order: a, b, x
    expect_ok(a, "group_leave", group=g)
    expect_error(x, "not_owner", "group_add", group=g, user=y.user)    # b, not x, is next
    expect_ok(b, "group_add", group=g, user=y.user)
    expect_ok(b, "group_remove", group=g, user=y.user)
    for member in (b, x):
        expect_ok(member, "group_leave", group=g)
    # the last member left: the group is gone
    expect_error(x, "not_member", "send", conv=g, cid="x1", body="x")
    expect_error(b, "not_member", "sync", conv=g, after=0)
    expect_ok(y, "group_create", group=g, members=[o.user])           # no `exists`
    expect_error(b, "not_member", "send", conv=g, cid="b1", body="x")
    ack = o.send(g, "new group")
    assert ack["conv"] == g
    expect_ok(o, "group_leave", group=g)                               # y owns it now
    expect_error(y, "not_member", "group_remove", group=g, user=o.user)


def test_nonexistent_group_answers_not_member(clients):
    c = clients.user()
    g = f"g:{fresh('none')}"
    expect_error(c, "not_member", "send", conv=g, cid="c1", body="x")
    expect_error(c, "not_member", "sync", conv=g, after=0)
    expect_error(c, "not_member", "group_leave", group=g)
    expect_error(c, "not_member", "group_add", group=g, user=c.user)
    expect_error(c, "not_member", "group_remove", group=g, user=c.user)


# -- the DM guarantees for groups ---------------------------------------------------------
def test_group_send_ack_gapless_in_order_no_echo(clients):
    members = [clients.user(gate=i % 2) for i in range(4)]
    g = group_of(members[0], *members[1:])
    per_sender = 10
    acks: dict = {m.user: [] for m in members}

    def flood(m):
        for i in range(per_sender):
            acks[m.user].append(m.send(g, f"{m.user}-{i}"))

    gevent.joinall([gevent.spawn(flood, m) for m in members[:3]], raise_error=True)
    total = 3 * per_sender
    all_seqs = sorted(a["seq"] for v in acks.values() for a in v)
    assert all_seqs == list(range(1, total + 1))                      # gapless, from 1
    for m in members[:3]:                                              # a session's order holds
        own = [a["seq"] for a in acks[m.user]]
        assert own == sorted(own)
    for m in members:
        own = {a["seq"] for a in acks[m.user]}
        got = m.wait_msgs(g, total - len(own))
        seqs = [x["seq"] for x in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs     # in order, once
        assert set(seqs) | own == set(range(1, total + 1))
        assert not own & set(seqs)                                     # no echo of own sends
        assert all(x["from"] != m.user for x in got)
        m.fence()
        assert len(m.msgs(g)) == len(got)                              # nothing more arrives
    # bodies and senders match what was sent
    by_seq = {x["seq"]: x for x in members[3].msgs(g)}
    for user, lst in acks.items():
        for i, a in enumerate(lst):
            assert by_seq[a["seq"]]["from"] == user and by_seq[a["seq"]]["body"] == f"{user}-{i}"
            assert by_seq[a["seq"]]["cid"] == a["cid"]


def test_group_resend_same_cid_is_deduplicated(clients):
    o, a, w = clients.user(), clients.user(gate=1), clients.user(gate=1)
    g = group_of(o, a, w)
    first = o.send(g, "once", cid="dup-1")
    again = o.send(g, "once", cid="dup-1")
    assert (again["seq"], again["ts"]) == (first["seq"], first["ts"]) == (1, first["ts"])
    # a reconnect and a resend: still the same ack
    o2 = clients.relogin(o, gate=1)
    third = o2.send(g, "once", cid="dup-1")
    assert (third["seq"], third["ts"]) == (first["seq"], first["ts"])
    nxt = o2.send(g, "next")
    assert nxt["seq"] == 2                                             # nothing stored in between
    for m in (a, w):
        got = m.wait_msgs(g, 2)
        m.fence()
        assert [x["seq"] for x in m.msgs(g)] == [1, 2]                 # delivered once
    assert [x["seq"] for x in a.sync(g, 0)["msgs"]] == [1, 2]


def test_group_ack_is_durable(cluster, clients):
    """An acked group message is in Redis (AOF on) and survives the zone and center dying."""
    o, a = clients.user(), clients.user(gate=1)
    g = group_of(o, a)
    a.logout()
    ack = o.send(g, "durable")
    r = redis_client(cluster)
    try:
        assert r.config_get("appendonly")["appendonly"] == "yes"
        stored = r.hget(r.layout.messages(g), ack["seq"])
        assert stored is not None and b"durable" in stored
    finally:
        r.close()
    zone = zone_of(cluster, g)
    cluster.restart(zone)
    cluster.restart("center1")
    a2 = clients.relogin(a, gate=0)
    got = a2.wait_msgs(g, 1, timeout=20)
    assert (got[0]["seq"], got[0]["body"], got[0]["from"]) == (ack["seq"], "durable", o.user)
    assert a2.welcome["convs"][g] == ack["seq"]


def test_group_offline_delivery_from_the_cursor(clients):
    o, a = clients.user(), clients.user(gate=1)
    g = group_of(o, a)
    a.logout()
    for i in range(5):
        o.send(g, f"m{i + 1}")
    a = clients.relogin(a, gate=0)
    assert a.welcome["convs"][g] == 5
    a.fence()                                   # after the replay
    assert [m["seq"] for m in a.msgs(g)] == [1, 2, 3, 4, 5]
    assert [m["body"] for m in a.msgs(g)] == ["m1", "m2", "m3", "m4", "m5"]
    a.recv(g, 3)
    a.logout()                                  # ok only once the recv is stored
    a = clients.relogin(a, gate=1)
    a.fence()
    assert [m["seq"] for m in a.msgs(g)] == [4, 5]
    own = a.send(g, "mine")                     # own messages are replayed too
    assert own["seq"] == 6
    a.logout()
    a = clients.relogin(a, gate=0)
    a.fence()
    assert [(m["seq"], m["from"]) for m in a.msgs(g)] == [(4, o.user), (5, o.user), (6, a.user)]
    a.recv(g, 6)
    a.logout()
    a = clients.relogin(a, gate=1)
    a.fence()
    assert a.msgs(g) == []


def test_group_offline_replay_is_not_cut_at_one_mib(cluster, clients):
    """The replay pushes every message above the cursor (up to chat.replay_max), even when
    they pass 1 MiB: it is not a history page."""
    o, a = clients.user(), clients.user(gate=1)
    g = group_of(o, a)
    a.logout()
    body, total = "p" * 4000, 400                # ~1.6 MB
    for i in range(total):
        admin(cluster, "/v1/post", {"conv": g, "body": body, "cid": f"post-{i}"})
    a = clients.relogin(a, gate=0, push_queue=None)
    assert a.welcome["convs"][g] == total
    a.wait_msgs(g, total, timeout=30)
    a.fence()
    assert a.seqs(g) == list(range(1, total + 1))
    assert all(m["body"] == body and m["from"] == "system" for m in a.msgs(g))


def test_new_member_starts_at_the_groups_last_seq(clients):
    o, a = clients.user(), clients.user(gate=1)
    newcomer = clients.register()
    g = group_of(o, a)
    for i in range(3):
        o.send(g, f"old{i}")
    expect_ok(o, "group_add", group=g, user=newcomer)
    b = clients.user(newcomer, gate=1, register=False)
    assert b.welcome["convs"][g] == 3
    b.fence()
    assert b.msgs(g) == []                      # older messages are not replayed
    o.send(g, "new")
    got = b.wait_msgs(g, 1)
    assert [m["seq"] for m in got] == [4]
    b.logout()                                  # no recv: seq 4 comes again, 1..3 never
    b = clients.relogin(b, gate=0)
    b.fence()
    assert [m["seq"] for m in b.msgs(g)] == [4]
    # adding again keeps the cursor where it is
    expect_ok(o, "group_add", group=g, user=newcomer)
    b.logout()
    b = clients.relogin(b, gate=0)
    b.fence()
    assert [m["seq"] for m in b.msgs(g)] == [4]


def test_removed_member_gets_nothing_sent_after_removal(clients):
    o = clients.user(gate=0)
    r, w = clients.user(gate=1), clients.user(gate=1)       # w: a witness on r's gate
    offline = clients.user(gate=0)
    g = group_of(o, r, w, offline)
    o.send(g, "before")
    r.wait_msgs(g, 1)
    w.wait_msgs(g, 1)
    offline.wait_msgs(g, 1)
    offline.recv(g, 1)
    offline.logout()
    expect_ok(o, "group_remove", group=g, user=r.user)
    expect_ok(o, "group_remove", group=g, user=offline.user)
    after = o.send(g, "after")
    w.wait_msgs(g, 2)                 # the same delivery would have carried r's copy
    r.fence()
    assert [m["seq"] for m in r.msgs(g)] == [1]
    expect_error(r, "not_member", "send", conv=g, cid="r1", body="x")
    expect_error(r, "not_member", "sync", conv=g, after=0)
    # nor at the next login
    r.logout()
    r = clients.relogin(r, gate=0)
    r.fence()
    assert g not in r.welcome["convs"] and r.msgs(g) == []
    off = clients.relogin(offline, gate=1)
    off.fence()
    assert g not in off.welcome["convs"]
    assert after["seq"] not in [m["seq"] for m in off.msgs(g)]


def test_welcome_convs_lists_the_users_groups(clients):
    u, o = clients.user(), clients.user(gate=1)
    busy, empty, other = group_of(o, u), group_of(u), group_of(o)
    o.send(busy, "one")
    o.send(busy, "two")
    o.send(dm_conv(o.user, u.user), "dm")
    u.logout()
    u = clients.relogin(u, gate=1)
    convs = u.welcome["convs"]
    assert convs[busy] == 2 and convs[empty] == 0 and convs[dm_conv(o.user, u.user)] == 1
    assert other not in convs and "sys" in convs
    expect_ok(u, "group_leave", group=empty)
    u.logout()
    u = clients.relogin(u, gate=0)
    assert empty not in u.welcome["convs"] and busy in u.welcome["convs"]
