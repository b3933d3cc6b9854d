"""Issue 12, point 1: zonechat on a real Redis Cluster (Debian's Redis 7: 3 masters, 3
replicas, cluster-node-timeout 2 s), and a master failing mid-stream.

Shown here, through the gates of a real zonechat cluster (``redis.mode: cluster``):

- the keys of a conversation share one Redis slot (the zonechat slot is their hash tag),
  the keys of a user share another, and the conversations spread over every master;
- DMs (live and offline), groups, rooms, sync and cursors work as on one Redis;
- a master SIGKILLed while writers send: its replica is promoted; sends to its slots
  answer ``unavailable`` meanwhile (the other masters' conversations go on) and resume by
  themselves (the test reports the time), and no acknowledged message is lost: every
  ack's seq holds that message afterwards, no seq twice. An ack waited for one replica
  (``WAIT``, redis.min_replicas_acked 1), so a promoted replica has every acknowledged
  write; the promoted master has no replica of its own until the dead node is started
  again (as a process supervisor would) and rejoins as one, and till then its slots'
  sends stay ``unavailable``: too few replicas is not an ack.
"""
from __future__ import annotations

import signal
import time

import gevent
import gevent.event
import pytest
from redis.cluster import ClusterNode, RedisCluster

from cluster import convs
from dc import keys
from harness import missing, poll_for
from kit import Clients, fresh, send_until_acked
from tools.redis_cluster import RedisClusterProcs, binaries

WRITERS = 6                 # DM pairs sending while a master dies
PACE = 0.1                  # seconds between two sends of a writer (under the 20/s send rate)
RECOVERY_GOAL = 20.0        # seconds (issue 12); the assertion allows a noisy machine more
RECOVERY_BOUND = 40.0


@pytest.fixture(scope="module")
def redis_procs(tmp_path_factory):
    if binaries() is None:
        missing("Debian's redis-server 7 is not installed (apt-get install redis-server)")
    procs = RedisClusterProcs(str(tmp_path_factory.mktemp("rcluster"))).start()
    yield procs
    procs.stop()


@pytest.fixture(scope="module")
def cluster(redis_procs, start_cluster):
    return start_cluster({"redis": {"managed": False, "mode": "cluster", "nodes": redis_procs.seeds,
                                    "url": redis_procs.url}})


@pytest.fixture
def clients(cluster):
    box = Clients(cluster)
    yield box
    box.close()


def cluster_client(procs: RedisClusterProcs) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in procs.running()],
                        password=procs.password, socket_timeout=5)


def dm_pair(clients):
    a, b = clients.user(fresh("ca")), clients.user(fresh("cb"), gate=1)
    return a, b, convs.dm(a.user, b.user)


def test_keys_of_a_conversation_share_a_slot_and_conversations_spread(cluster, redis_procs, clients):
    layout = keys.Layout(cluster.cfg.chat.slots)
    a = clients.user(fresh("spread"))
    others = [clients.register() for _ in range(24)]
    for other in others:
        assert a.send(convs.dm(a.user, other), "hi")["seq"] == 1
    rc = cluster_client(redis_procs)
    try:
        conv = convs.dm(a.user, others[0])
        slots = {rc.keyslot(k) for k in (layout.seq(conv), layout.messages(conv), layout.dedup(conv, a.user, "x"))}
        assert len(slots) == 1
        assert len({rc.keyslot(k) for k in (keys.user(a.user), keys.cursors(a.user), keys.user_convs(a.user))}) == 1
        homes = {rc.get_node_from_key(layout.seq(convs.dm(a.user, o))).name for o in others}
        assert len(homes) == 3, homes                  # 24 conversations over all 3 masters
        assert rc.hget(keys.LAYOUT, "version") == b"2"
    finally:
        rc.close()


def test_dms_groups_rooms_sync_and_cursors(cluster, clients):
    a, b, dm = dm_pair(clients)
    acked = [a.send(dm, f"m{i}")["seq"] for i in range(5)]
    assert acked == [1, 2, 3, 4, 5]
    assert [m["body"] for m in b.wait_msgs(dm, 5)] == [f"m{i}" for i in range(5)]
    b.recv(dm, 5)
    group = f"g:{fresh('cg')}"
    assert a.request("group_create", group=group, members=[b.user])["t"] == "ok"
    assert a.send(group, {"n": 1})["seq"] == 1
    assert [m["body"] for m in b.wait_msgs(group, 1)] == [{"n": 1}]
    room = f"r:{fresh('cr')}"
    a.request("join", room=room)
    b.request("join", room=room)
    a.send(room, "room hi")
    assert [m["body"] for m in b.wait_msgs(room, 1)] == ["room hi"]
    name = b.user
    b.close()
    a.send(dm, "while away")
    back = clients.user(name, gate=0, register=False)
    assert back.welcome["convs"][dm] == 6 and back.welcome["convs"][group] == 1
    assert [m["body"] for m in back.wait_msgs(dm, 1)] == ["while away"]   # only above the cursor
    assert [m["seq"] for m in back.sync(dm, 0)["msgs"]] == [1, 2, 3, 4, 5, 6]


def writer(client, conv: str, stop, acked: list, errors: list) -> None:
    i = 0
    while not stop.is_set():
        cid = f"{client.user}-{i}"
        try:
            acked.append((conv, cid, send_until_acked(client, conv, cid, f"w{i}", patience=RECOVERY_BOUND,
                                                      retry=0.25), time.monotonic()))
        except AssertionError as exc:
            errors.append(str(exc))
            return
        i += 1
        gevent.sleep(PACE)


def test_a_master_dies_mid_stream_and_no_acked_message_is_lost(cluster, redis_procs, clients):
    layout = keys.Layout(cluster.cfg.chat.slots)
    pairs = [dm_pair(clients) for _ in range(WRITERS)]
    victim = rc_port(redis_procs, layout.seq(pairs[0][2]))
    heir = redis_procs.replica_of(victim)
    on_victim = [conv for _, _, conv in pairs if rc_port(redis_procs, layout.seq(conv)) == victim]
    stop, acked, errors = gevent.event.Event(), [], []
    jobs = [gevent.spawn(writer, a, conv, stop, acked, errors) for a, _, conv in pairs]
    try:
        poll_for(lambda: len(acked) >= 30, 20, "writers sending")
        redis_procs.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        poll_for(lambda: redis_procs.role(heir) == "master", RECOVERY_BOUND, f"replica {heir} promoted")
        promoted = time.monotonic() - killed
        # the promoted master has no replica until the dead node comes back as one (a
        # process supervisor restarting it): till then an ack cannot wait for a replica
        redis_procs.restart(victim)
        resumed = poll_for(lambda: next((t for conv, _, _, t in acked if conv in on_victim and t > killed), None),
                           RECOVERY_BOUND, "a send to the dead master's slots acked again")
        recovery = resumed - killed
        poll_for(lambda: sum(1 for *_, t in acked if t > resumed) >= 30, 20, "writers going on")
    finally:
        stop.set()
        gevent.joinall(jobs, timeout=RECOVERY_BOUND + 10)
    print(f"\nRedis master SIGKILLed: replica promoted after {promoted:.1f}s, sends to its slots acked "
          f"again after {recovery:.1f}s (goal {RECOVERY_GOAL:g}s); {len(acked)} acked messages")
    assert not errors, errors[:3]
    assert redis_procs.role(victim) == "slave"              # it came back as the heir's replica
    elsewhere = [t for conv, _, _, t in acked if conv not in on_victim and killed + 1 < t < resumed - 1]
    assert elsewhere or len(on_victim) == WRITERS, "the other masters' conversations stopped too"
    check_nothing_lost(clients, pairs, acked)


def rc_port(procs: RedisClusterProcs, key: str) -> int:
    rc = cluster_client(procs)
    try:
        return rc.get_node_from_key(key).port
    finally:
        rc.close()


def history(client, conv: str) -> list[dict]:
    page: list = []
    while True:
        got = client.sync(conv, page[-1]["seq"] if page else 0, 500)
        page += got["msgs"]
        if not got["msgs"] or page[-1]["seq"] >= got["last_seq"]:
            return page


def check_nothing_lost(clients, pairs, acked) -> None:
    for a, _, conv in pairs:
        page = history(a, conv)
        seqs, cids = [m["seq"] for m in page], [m["cid"] for m in page]
        assert seqs == sorted(set(seqs)), f"{conv}: a seq twice or out of order"
        assert len(cids) == len(set(cids)), f"{conv}: a message stored twice"
        by_seq = dict(zip(seqs, cids))
        mine = [(cid, seq) for c, cid, seq, _ in acked if c == conv]
        assert mine, f"{conv}: no acked message"
        for cid, seq in mine:
            assert by_seq.get(seq) == cid, f"{conv}: acked {cid} as seq {seq}, history has {by_seq.get(seq)}"
