"""Issue 3, point 5: moderation for live events, through ``zonechat admin`` (the real CLI)
and center's admin endpoint, enforced on both gates and both zones.

kick, mute (and unmute) within a second on both zones, ban (and unban), per-room slow
mode and duplicate suppression (both off until an operator turns them on), the word
filter (mask from the config, refuse after the config file changed and ``admin reload``)
and per-user block lists.

The module's cluster starts with ``moderation.word_filter: [darn\\w*]`` and
``filter_action: mask``.
"""
from __future__ import annotations

import time

import pytest
import yaml

from client import dm_conv
from kit import (PASSWORD, admin, admin_cli, conv_on_zone, expect_error, expect_ok, fresh, wait_for,
                 zone_names)

FILTER = {"moderation": {"word_filter": [r"darn\w*"], "filter_action": "mask"}}


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster(FILTER)


def room() -> str:
    return f"r:{fresh('mod')}"


def wait_kicked(c, reason: str) -> None:
    wait_for(lambda: c.kicked_reason is not None, f"{c.user} kicked")
    assert c.kicked_reason == reason
    wait_for(lambda: c.closed.is_set(), f"{c.user}'s connection closed")
    kicked = c.pushed("kicked")
    assert [k["reason"] for k in kicked] == [reason]


# -- kick, mute, ban ---------------------------------------------------------------------------
def test_kick(cluster, clients):
    u, other = clients.user(gate=1), clients.user(gate=0)
    out = admin_cli(cluster, "kick", u.user)
    assert '"kicked": true' in out.stdout
    wait_kicked(u, "admin")
    other.fence()                                        # nobody else is touched
    assert other.kicked_reason is None
    assert '"kicked": false' in admin_cli(cluster, "kick", fresh("nobody")).stdout
    again = clients.relogin(u, gate=0)                   # a kick is no ban
    assert again.welcome["user"] == u.user


def test_mute_holds_on_both_zones_within_a_second_and_unmute(cluster, clients):
    u = clients.user(gate=0)
    peers = {}
    for zone in zone_names(cluster):
        peer_names = []

        def dm_with(i, peer_names=peer_names):
            name = f"{fresh('peer')}"
            peer_names.append(name)
            return dm_conv(u.user, name)
        conv = conv_on_zone(cluster, zone, dm_with)
        peer = [n for n in peer_names if dm_conv(u.user, n) == conv][0]
        clients.register(peer)
        peers[zone] = conv
    for conv in peers.values():
        u.send(conv, "before")
    started = time.monotonic()
    admin_cli(cluster, "mute", u.user, "--for", "10m")
    waited = time.monotonic() - started          # the CLI's own start-up is in here too
    for zone, conv in peers.items():
        def muted(conv=conv):
            reply = u.request("send", conv=conv, cid=fresh("c"), body="while muted")
            return reply if reply.get("code") == "muted" else None
        reply = wait_for(muted, f"muted on {zone}", timeout=1.0, interval=0.05)
        assert reply["until"] > time.time() * 1000 + 9 * 60 * 1000
    assert time.monotonic() - started < waited + 1.0
    # a mute is for sends only: the user still reads and syncs
    assert u.sync(list(peers.values())[0], after=0)["last_seq"] == 1
    admin_cli(cluster, "unmute", u.user)
    for zone, conv in peers.items():
        wait_for(lambda conv=conv: u.request("send", conv=conv, cid=fresh("c"), body="free")["t"] == "ack",
                 f"unmuted on {zone}", timeout=1.0, interval=0.05)


def test_mute_expires_by_itself(cluster, clients):
    u, v = clients.user(), clients.user(gate=1)
    conv = dm_conv(u.user, v.user)
    admin(cluster, "/v1/mute", {"user": u.user, "seconds": 1.5})
    wait_for(lambda: u.request("send", conv=conv, cid=fresh("c"), body="x").get("code") == "muted",
             "muted", timeout=1.0)
    wait_for(lambda: u.request("send", conv=conv, cid=fresh("c"), body="x")["t"] == "ack",
             "mute over", timeout=5.0, interval=0.1)


def test_ban_and_unban(cluster, clients):
    u = clients.user(gate=1)
    out = admin_cli(cluster, "ban", u.user, "--reason", "spamming the event")
    assert '"banned": true' in out.stdout
    wait_kicked(u, "banned")
    c = clients.connect(gate=0)
    reply = c.request("login", user=u.user, password=PASSWORD, v=1)
    assert reply["t"] == "error" and reply["code"] == "auth_failed", reply
    assert "ban" in reply["reason"] and "spamming the event" in reply["reason"]
    c2 = clients.connect(gate=1)                          # a token does not get around it
    assert c2.request("login", user=u.user, token=u.token)["code"] == "auth_failed"
    admin_cli(cluster, "unban", u.user)
    back = clients.user(u.user, gate=0, register=False)
    assert back.welcome["user"] == u.user
    bad = admin_cli(cluster, "ban", fresh("ghost"), check=False)
    assert bad.returncode != 0 and "no_such_user" in bad.stderr


# -- slow mode and duplicate suppression ---------------------------------------------------------
def test_slow_mode_is_off_by_default_then_one_message_per_interval(cluster, clients):
    r = room()
    a, b = clients.user(gate=0), clients.user(gate=1)
    a.join(r)
    b.join(r)
    for i in range(5):                                    # off by default
        a.send(r, f"quick {i}")
    out = admin_cli(cluster, "slow", r, "2")
    assert '"slow": 2' in out.stdout
    wait_for(lambda: a.request("send", conv=r, cid=fresh("c"), body="probe").get("code") == "rate_limited",
             "slow mode on", timeout=1.0)
    started = time.monotonic()
    reply = a.request("send", conv=r, cid=fresh("c"), body="too soon")
    assert reply.get("code") == "rate_limited", reply
    first_b = b.request("send", conv=r, cid=fresh("c"), body="b may")  # per user
    assert first_b["t"] == "ack", first_b
    assert b.request("send", conv=r, cid=fresh("c"), body="b again").get("code") == "rate_limited"
    wait_for(lambda: a.request("send", conv=r, cid=fresh("c"), body="later")["t"] == "ack",
             "the next slot", timeout=3.0, interval=0.25)
    assert time.monotonic() - started > 1.0
    other_room = room()
    a.join(other_room)
    a.send(other_room, "1")
    a.send(other_room, "2")                               # only that room is slow
    admin_cli(cluster, "slow", r, "0")
    wait_for(lambda: b.request("send", conv=r, cid=fresh("c"), body="free")["t"] == "ack",
             "slow mode off", timeout=1.0)
    assert b.send(r, "free again")["t"] == "ack"


def test_duplicate_suppression_is_off_by_default_then_refuses_repeats(cluster, clients):
    r = room()
    a, b = clients.user(gate=0), clients.user(gate=1)
    a.join(r)
    b.join(r)
    a.send(r, "gg")
    a.send(r, "gg")                                       # off by default
    assert '"dups": 30' in admin_cli(cluster, "dups", r, "30").stdout
    wait_for(lambda: a.request("send", conv=r, cid=fresh("c"), body="gg").get("code") == "rate_limited",
             "duplicate suppression on", timeout=1.0)
    assert a.request("send", conv=r, cid=fresh("c"), body="gg").get("code") == "rate_limited"
    assert a.send(r, "something else")["t"] == "ack"
    assert b.send(r, "gg")["t"] == "ack"                  # another user
    assert b.request("send", conv=r, cid=fresh("c"), body="gg").get("code") == "rate_limited"
    assert a.send(dm_conv(a.user, b.user), "gg")["t"] == "ack"  # rooms only
    assert a.send(dm_conv(a.user, b.user), "gg")["t"] == "ack"
    admin(cluster, "/v1/room", {"room": r, "dups": 0})
    wait_for(lambda: a.request("send", conv=r, cid=fresh("c"), body="gg")["t"] == "ack",
             "duplicate suppression off", timeout=1.0)


# -- word filter -------------------------------------------------------------------------------
def test_word_filter_masks_as_configured(clients):
    a, b = clients.user(gate=0), clients.user(gate=1)
    conv = dm_conv(a.user, b.user)
    ack = a.send(conv, "well DARNIT that was close")
    got = b.wait_msgs(conv, 1)[0]
    assert got["body"] == "well ****** that was close"
    assert a.sync(conv, after=0)["msgs"][0]["body"] == "well ****** that was close"
    assert ack["t"] == "ack"
    r = room()
    a.join(r)
    b.join(r)
    a.send(r, "darn")
    assert b.wait_msgs(r, 1)[0]["body"] == "****"
    a.send(conv, {"not": "text darn"})                     # only text bodies are filtered
    assert b.wait_msgs(conv, 2)[1]["body"] == {"not": "text darn"}


def test_word_filter_reload_from_the_changed_config_file(cluster, clients):
    a, b = clients.user(gate=0), clients.user(gate=1)
    conv = dm_conv(a.user, b.user)
    with open(cluster.config_path) as fh:
        original = fh.read()
    raw = yaml.safe_load(original)
    raw["moderation"] = {"word_filter": [r"\bheck\b"], "filter_action": "refuse"}
    try:
        with open(cluster.config_path, "w") as fh:
            yaml.safe_dump(raw, fh, sort_keys=False)
        out = admin_cli(cluster, "reload")
        assert '"reloaded": 2' in out.stdout

        def refused():
            reply = a.request("send", conv=conv, cid=fresh("c"), body="oh heck")
            return reply if reply.get("code") == "filtered" else None
        reply = wait_for(refused, "the new filter on the zone", timeout=2.0)
        assert reply["reason"]
        ack = a.send(conv, "darn is fine now")               # the old pattern is gone
        got = b.wait_msgs(conv, 1)
        assert [m["body"] for m in got] == ["darn is fine now"] and got[0]["seq"] == ack["seq"]
        assert a.sync(conv, after=0)["last_seq"] == ack["seq"]  # a refused send is not stored
    finally:
        with open(cluster.config_path, "w") as fh:
            fh.write(original)
        admin_cli(cluster, "reload")
    wait_for(lambda: a.request("send", conv=conv, cid=fresh("c"), body="oh heck")["t"] == "ack",
             "the original filter back", timeout=2.0)


# -- block lists -------------------------------------------------------------------------------
def test_block_and_unblock(clients):
    spammer, victim = clients.user(gate=0), clients.user(gate=1)
    witness = clients.user(gate=1)                         # on the victim's gate
    conv = dm_conv(spammer.user, victim.user)
    r = room()
    for c in (spammer, victim, witness):
        c.join(r)
    expect_ok(victim, "block", user=spammer.user)
    reply = expect_error(spammer, "blocked", "send", conv=conv, cid="s1", body="hey")
    assert reply["reason"]
    assert victim.send(conv, "I can still talk")["t"] == "ack"      # one way only
    spammer.send(r, "room spam")
    witness.wait_msgs(r, 1)
    victim.fence()
    assert victim.msgs(r) == []
    victim.send(r, "victim talks")                                  # the spammer still hears
    spammer.wait_msgs(r, 1)
    # the block survives a new login on another gate
    victim = clients.relogin(victim, gate=0)
    victim.join(r)
    witness2 = clients.user(gate=0)
    witness2.join(r)
    spammer.send(r, "more spam")
    witness2.wait_msgs(r, 1)
    victim.fence()
    assert victim.msgs(r) == []
    expect_error(spammer, "blocked", "send", conv=conv, cid="s2", body="hey")
    expect_ok(victim, "unblock", user=spammer.user)
    ack = spammer.send(conv, "hello again")
    wait_for(lambda: ack["seq"] in victim.seqs(conv), "the DM after unblock")
    spammer.send(r, "welcome back")
    assert [m["body"] for m in victim.wait_msgs(r, 1)] == ["welcome back"]


def test_block_request_errors(clients):
    a = clients.user()
    expect_error(a, "bad_request", "block", user=a.user)
    expect_error(a, "bad_request", "block", user="not a name")
    expect_error(a, "bad_request", "unblock")
    expect_error(a, "no_such_user", "block", user=fresh("ghost"))
    expect_error(clients.connect(), "auth_required", "block", user=a.user)
