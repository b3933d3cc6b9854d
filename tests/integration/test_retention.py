"""Issue 12, point 4: history with a retention policy (``chat.retention``), on the real
cluster with real Redis.

The module's cluster keeps DMs by count (the newest 5), groups by age (2 s), rooms by
count (10) and sys as shipped (chat.room_history). Shown here:

- the store trims in the same call: Redis holds exactly the kept messages of a DM and a
  room, a sync from the start answers ``history.first_seq`` and only what is kept;
- a member offline past the window gets, at login, ``welcome.convs`` with the real last
  seq and a replay of what is still kept, each with its own seq;
- a group kept for 2 s: messages older than that (plus one checkpoint second) are gone
  while new ones flow in; a group nobody writes to loses its whole history when it
  expires, keeps its seq counter (the next message is last + 1, never a reused seq);
- a sync at or above the kept range has no ``first_seq``;
- the traffic log is the archive: ``zonechat log export`` gives every message of a DM,
  the trimmed ones too, with its body.
"""
from __future__ import annotations

import json
import time

import pytest

from dc import keys
from harness import poll_for, zonechat
from kit import Users, fresh, pair, redis_client, stored_seqs

DM_COUNT, ROOM_COUNT, GROUP_AGE = 5, 10, 2.0
RETENTION = {"dm": {"count": DM_COUNT}, "group": {"age": GROUP_AGE}, "room": {"count": ROOM_COUNT}}
AGE_WAIT = 20.0            # seconds a test waits for the age bound to show (it needs ~3 s)


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"chat": {"retention": RETENTION}})


@pytest.fixture
def users(cluster):
    with Users(cluster) as made:
        yield made


def sync(conn, conv: str, after: int = 0, limit: int = 100) -> dict:
    reply = conn.request("sync", conv=conv, after=after, limit=limit)
    assert reply["t"] == "history", reply
    return reply


def ack(conn, conv: str, body) -> dict:
    reply = conn.send(conv, body)
    assert reply["t"] == "ack", reply
    return reply


def seqs(reply: dict) -> list[int]:
    return [m["seq"] for m in reply["msgs"]]


def test_a_dm_keeps_its_newest_messages_and_sync_says_where_they_start(cluster, users):
    a, b, conv = pair(users)
    for i in range(8):
        ack(a, conv, f"dm {i}")
    r = redis_client(cluster)
    assert stored_seqs(r, conv) == [4, 5, 6, 7, 8]                  # trimmed as it stored
    page = sync(a, conv)
    assert page["first_seq"] == 4 and page["last_seq"] == 8 and seqs(page) == [4, 5, 6, 7, 8]
    assert [m["body"] for m in page["msgs"]] == [f"dm {i}" for i in range(3, 8)]
    above = sync(b, conv, after=5)
    assert seqs(above) == [6, 7, 8] and "first_seq" not in above
    assert "first_seq" not in sync(b, conv, after=3)                 # 4 is the first kept: nothing missed


def exported(cluster, conv: str, *args: str) -> list[dict]:
    out = zonechat("log", "export", conv, *args, config=cluster.config_path)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_log_export_has_what_retention_trimmed(cluster, users, tmp_path):
    a, b, conv = pair(users)
    for i in range(8):
        ack(b if i % 2 else a, conv, {"text": f"kept {i}"} if i % 2 else f"said {i}")
    assert stored_seqs(redis_client(cluster), conv) == [4, 5, 6, 7, 8]
    lines = poll_for(lambda: (found := exported(cluster, conv)) and len(found) == 8 and found,
                     10, "8 messages in the export")
    assert [m["seq"] for m in lines] == list(range(1, 9))
    assert [m["from"] for m in lines] == [a.user, b.user] * 4
    assert lines[0]["body"] == "said 0" and lines[7]["body"] == {"text": "kept 7"}
    assert all(m["conv"] == conv and isinstance(m["ts"], int) for m in lines)
    since = exported(cluster, conv, "--since", str(lines[5]["ts"]))
    assert [m["seq"] for m in since] == [m["seq"] for m in lines if m["ts"] >= lines[5]["ts"]]
    assert 1 not in [m["seq"] for m in since] and 8 in [m["seq"] for m in since]
    target = tmp_path / "dm.jsonl"
    out = zonechat("log", "export", conv, "-o", str(target), config=cluster.config_path)
    assert out.returncode == 0 and "8 messages" in out.stderr, out.stderr
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [json.loads(line) for line in target.read_text().splitlines()] == lines
    again = zonechat("log", "export", conv, "-o", str(target), config=cluster.config_path)
    assert again.returncode != 0 and "exists" in again.stderr


def test_a_member_offline_past_the_window_gets_what_is_kept_at_login(cluster, users):
    a, b, conv = pair(users)
    name = b.user
    b.close()                                                        # offline from here
    for i in range(9):
        ack(a, conv, f"while away {i}")
    back = users.relogin(name, gate=1)
    assert back.welcome["convs"][conv] == 9
    replay = back.msgs(conv, DM_COUNT)
    assert [m["seq"] for m in replay] == [5, 6, 7, 8, 9]
    assert [m["body"] for m in replay] == [f"while away {i}" for i in range(4, 9)]
    assert [m for m in back.drain() if m.get("conv") == conv] == []   # nothing older, nothing twice


def test_a_room_keeps_its_newest_messages(cluster, users):
    a = users.new("ra")
    room = f"r:{fresh('keep')}"
    a.request("join", room=room)
    for i in range(ROOM_COUNT + 3):
        ack(a, room, f"room {i}")
    assert stored_seqs(redis_client(cluster), room) == list(range(4, ROOM_COUNT + 4))
    page = sync(a, room)
    assert page["first_seq"] == 4 and seqs(page) == list(range(4, ROOM_COUNT + 4))


def new_group(users):
    owner, member = users.new("go"), users.new("gm", gate=1)
    group = f"g:{fresh('aged')}"
    assert owner.request("group_create", group=group, members=[member.user])["t"] == "ok"
    return owner, member, group


def test_a_group_kept_for_a_time_forgets_what_is_older(cluster, users):
    owner, member, group = new_group(users)
    for i in range(3):
        ack(owner, group, f"early {i}")
    r = redis_client(cluster)
    deadline, sent = time.monotonic() + AGE_WAIT, 3
    while stored_seqs(r, group)[:1] == [1]:                          # new messages keep coming
        assert time.monotonic() < deadline, f"seqs 1-3 still kept after {AGE_WAIT:g}s: {stored_seqs(r, group)}"
        ack(owner, group, f"later {sent}")
        sent += 1
        time.sleep(0.2)                                              # a writer's pace, not a wait for a server
    kept = stored_seqs(r, group)
    assert kept == list(range(kept[0], sent + 1)) and kept[0] > 3   # contiguous, the early ones gone
    page = sync(member, group)
    assert page["first_seq"] == kept[0] and seqs(page) == kept
    ttl = r.pttl(r.layout.messages(group))
    assert 0 < ttl <= (GROUP_AGE + 1) * 1000                        # the whole history expires if idle


def test_an_idle_group_expires_whole_and_its_seqs_go_on(cluster, users):
    owner, member, group = new_group(users)
    for i in range(4):
        ack(owner, group, f"old {i}")
    r = redis_client(cluster)
    poll_for(lambda: not r.exists(r.layout.messages(group)), AGE_WAIT, f"{group}'s idle history expired", interval=0.1)
    assert not r.exists(r.layout.checkpoints(group)) and int(r.get(r.layout.seq(group))) == 4
    page = sync(member, group)
    assert page["msgs"] == [] and page["last_seq"] == 4 and page["first_seq"] == 5
    assert ack(owner, group, "new")["seq"] == 5   # never a reused seq
    page = sync(member, group)
    assert seqs(page) == [5] and page["first_seq"] == 5
