"""Issue 12, point 4: backup and restore of a cluster (Redis, the secret, the keys), on a
real cluster with its managed Redis.

The procedure of docs/operations.md, step by step: ``zonechat backup`` while the cluster
runs, ``zonechat down``, the data_dir's state lost (Redis's files, the secret, the keys
deleted), ``zonechat restore``, ``zonechat up``. Shown: accounts log in with their
passwords and with a token minted before the backup (the secret came back), the keys are
the same bytes, DM and group histories are whole with their bodies, welcome names the real
last seqs, and the next message gets the next seq (the counters came back with the
messages, never a reused seq). And what a restore refuses: a running cluster, a data_dir
that holds state (unless --force, which moves it aside), a file that is no backup.
"""
from __future__ import annotations

import os
import shutil
import tarfile

import pytest

from cluster import keys, redis_server, secrets
from harness import zonechat
from kit import Users, fresh, pair

MESSAGES = 6


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster()


def ack(conn, conv: str, body) -> int:
    reply = conn.send(conv, body)
    assert reply["t"] == "ack", reply
    return reply["seq"]


def key_bytes(cfg) -> dict:
    directory = keys.keys_dir(cfg)
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def lose_state(cfg) -> None:
    """What a lost disk takes: Redis's files, the secret, the keys."""
    shutil.rmtree(redis_server.data_dir(cfg))
    shutil.rmtree(keys.keys_dir(cfg))
    os.unlink(secrets.secret_path(cfg))


def chat_before(users):
    a, b, dm = pair(users)
    group = f"g:{fresh('bk')}"
    assert a.request("group_create", group=group, members=[b.user])["t"] == "ok"
    sent = {dm: [ack(a if i % 2 else b, dm, f"dm {i}") for i in range(MESSAGES)],
            group: [ack(a, group, {"n": i}) for i in range(3)]}
    return a.user, b.user, a.welcome["token"], dm, group, sent


def check_archive(path: str, cfg) -> None:
    assert (os.stat(path).st_mode & 0o777) == 0o600
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "redis/dump.rdb", "secret", "keys/public.yaml", "keys/redis.pass"} <= names
    assert {f"keys/{node}.key_secret" for node in cfg.nodes} <= names


def test_backup_down_lose_everything_restore_up(cluster, tmp_path):
    cfg = cluster.cfg
    with Users(cluster) as users:
        alice, bob, token, dm, group, sent = chat_before(users)
    archive = str(tmp_path / "cluster.tar.gz")
    made = zonechat("backup", archive, config=cluster.config_path)
    assert made.returncode == 0 and "backup written" in made.stdout, made.stdout + made.stderr
    check_archive(archive, cfg)
    assert zonechat("backup", archive, config=cluster.config_path).returncode != 0      # never overwritten
    running = zonechat("restore", archive, config=cluster.config_path)
    assert running.returncode != 0 and "zonechat down" in running.stderr, running.stderr
    before, secret = key_bytes(cfg), cluster.secret
    cluster.stop()
    lose_state(cfg)
    restored = zonechat("restore", archive, config=cluster.config_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert key_bytes(cfg) == before and cluster.secret == secret
    assert not os.path.exists(os.path.join(redis_server.data_dir(cfg), "dump.rdb"))   # the AOF holds it now
    cluster.start()
    with Users(cluster) as users:
        back = users.relogin(alice, gate=1)
        assert back.welcome["convs"][dm] == sent[dm][-1] and back.welcome["convs"][group] == sent[group][-1]
        page = back.request("sync", conv=dm, after=0, limit=100)
        assert [m["seq"] for m in page["msgs"]] == sent[dm]
        assert [m["body"] for m in page["msgs"]] == [f"dm {i}" for i in range(MESSAGES)]
        groups = back.request("sync", conv=group, after=0, limit=100)
        assert [m["body"] for m in groups["msgs"]] == [{"n": i} for i in range(3)]
        assert ack(back, dm, "after the restore") == sent[dm][-1] + 1
        by_token = users.connect(0)
        assert by_token.login(alice, token=token)["t"] == "welcome"
        assert users.relogin(bob).welcome["convs"][dm] == sent[dm][-1] + 1


def test_restore_refuses_a_data_dir_with_state_unless_forced(cluster, tmp_path):
    cfg = cluster.cfg
    archive = str(tmp_path / "again.tar.gz")
    assert zonechat("backup", archive, config=cluster.config_path).returncode == 0
    cluster.stop()
    try:
        refused = zonechat("restore", archive, config=cluster.config_path)
        assert refused.returncode != 0 and "--force" in refused.stderr, refused.stderr
        forced = zonechat("restore", archive, "--force", config=cluster.config_path)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        aside = [d for d in os.listdir(cfg.data_dir) if d.startswith("before-restore-")]
        assert aside and {"redis", "keys", "secret"} <= set(os.listdir(os.path.join(cfg.data_dir, aside[-1])))
        bogus = tmp_path / "bogus.tar.gz"
        with tarfile.open(bogus, "w:gz") as tar:
            tar.add(__file__, arcname="../escape.py")
        wrong = zonechat("restore", str(bogus), "--force", config=cluster.config_path)
        assert wrong.returncode != 0 and "not a zonechat backup" in wrong.stderr, wrong.stderr
    finally:
        cluster.start()
