"""Issue 12, point 1: the key layout's version key, and ``zonechat migrate`` from version 1.

On a real cluster: its Redis is turned into a version-1 dataset (every key renamed back to
its name without hash tag, the version key deleted). A dc restarted on it refuses to
start, naming ``zonechat migrate``; nothing is written into the old dataset. ``zonechat
migrate`` renames every key; dc comes back by itself; the accounts log in, the histories
are whole and the next message of a DM gets the next seq (its counter was renamed with it).
"""
from __future__ import annotations

import re

import pytest

from dc import keys, layout
from harness import poll_for, zonechat
from kit import Users, pair, redis_client, stored_seqs

TAGGED = re.compile(r"^(\w+):\{([^}]*)\}(.*)$", re.S)


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"supervisor": {"restart_attempts": 50, "retry_in": 1}})


def v1_name(name: str) -> str | None:
    """The version-1 name of a tagged key (the test's own inverse of dc.layout.v2_name)."""
    found = TAGGED.match(name)
    if not found:
        return None
    prefix, inner, rest = found.groups()
    return f"{prefix}:{inner}" if prefix in layout.USER_PREFIXES else f"{prefix}:{rest}"


def back_to_v1(r) -> int:
    names = [k.decode() for k in r.scan_iter(count=1000)]
    pipe = r.pipeline(transaction=False)
    for name in names:
        if v1_name(name):
            pipe.rename(name, v1_name(name))
    pipe.delete(keys.LAYOUT)
    return len(pipe.execute()) - 1


def test_a_version_1_dataset_is_refused_then_migrated(cluster):
    with Users(cluster) as users:
        a, b, conv = pair(users)
        for i in range(4):
            assert a.send(conv, f"v1 {i}")["t"] == "ack"
        alice = a.user
    r = redis_client(cluster)
    assert stored_seqs(r, conv) == [1, 2, 3, 4]
    assert back_to_v1(r) > 10 and r.exists(f"seq:{conv}") and not r.exists(r.layout.seq(conv))
    old = cluster.kill("dc1")
    poll_for(lambda: "zonechat migrate" in cluster.log_text("dc1"), 30, "dc refusing the version-1 dataset")
    assert not r.exists(keys.LAYOUT) and not r.exists(r.layout.seq(conv))    # nothing written into it
    out = zonechat("migrate", config=cluster.config_path)
    assert out.returncode == 0 and "renamed" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split("renamed ")[1].split()[0]) > 10
    assert r.hgetall(keys.LAYOUT) == {b"version": b"2", b"slots": str(cluster.cfg.chat.slots).encode()}
    assert not r.exists(f"seq:{conv}") and stored_seqs(r, conv) == [1, 2, 3, 4]
    again = zonechat("migrate", config=cluster.config_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    cluster.wait_ready("dc1", old_pid=old)
    with Users(cluster) as users:
        back = users.relogin(alice)
        assert back.welcome["convs"][conv] == 4
        page = back.request("sync", conv=conv, after=0, limit=10)
        assert [m["body"] for m in page["msgs"]] == [f"v1 {i}" for i in range(4)]
        assert back.send(conv, "after the migration")["seq"] == 5
