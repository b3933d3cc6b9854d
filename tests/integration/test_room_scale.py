"""Issue 3, point 7 (how it is shown): 2,000 connections in one room, spread over both
gates, on the real cluster.

Every member gets every room message once, in seq order; and a room message crosses the
bus once per gate, not once per member. The bus frames are counted with what the cluster
lets us observe: center's ``rdlv`` counter (/v1/stats: one per room message from the
zone) and the gates' ``out`` log records (gate/node.py ``on_rdlv``: one per gate that
fanned a message out, with its local recipient count).

Marked ``scale``: about a minute on 2 cores (deselect with ``-m "not scale"``).
"""
from __future__ import annotations

import resource

import pytest
from gevent.pool import Pool

from kit import Peer, admin, fresh, out_records_of, wait_for

MEMBERS = 2000
SENDERS = 4                      # members too: two on each gate
PER_SENDER = 10                  # under the per-user burst of 40: no rate_limited
MESSAGES = SENDERS * PER_SENDER

pytestmark = pytest.mark.scale


def test_two_thousand_members_one_room_two_gates(cluster, clients):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= MEMBERS + 500, f"the test needs {MEMBERS + 500} open files, the limit is {soft}"
    room = f"r:{fresh('arena')}"
    members = join_members(cluster, clients, room)
    before = admin(cluster, "/v1/stats")["counters"].get("rdlv", 0)
    senders = members[:SENDERS]                 # members 0, 2 on gate1; 1, 3 on gate2
    acked, first = send_and_check_acks(senders, room)
    check_every_member_got_everything(cluster, members, room, acked, first, before)
    # one rdlv per room message at center ...
    wait_for(lambda: admin(cluster, "/v1/stats")["counters"].get("rdlv", 0) - before >= MESSAGES,
             "center's rdlv counter", timeout=10)
    assert admin(cluster, "/v1/stats")["counters"]["rdlv"] - before == MESSAGES
    # ... and one frame to each gate: one `out` record per gate and message, for 1999 recipients
    check_once_per_gate(cluster, room, senders, acked, first)
    for p in members:
        p.stop()


def join_members(cluster, clients, room: str) -> list:
    members: list = [None] * MEMBERS

    def connect(i: int) -> None:
        conn = clients.raw(gate=i % 2)          # even: gate1, odd: gate2
        name = fresh("m")
        conn.login(name)
        joined = conn.request("join", room=room)
        assert joined["t"] == "joined", joined
        members[i] = Peer(conn, name)

    pool = Pool(100)
    for i in range(MEMBERS):
        pool.spawn(connect, i)
    pool.join(raise_error=True)
    assert all(members)
    wait_for(lambda: admin(cluster, "/v1/stats")["room_members"] == MEMBERS, f"{MEMBERS} members counted",
             timeout=30)
    return members


def send_and_check_acks(senders, room: str) -> tuple[dict, int]:
    """Every sender sends PER_SENDER messages; acks are gapless and in each sender's order."""
    for k in range(PER_SENDER):
        for s in senders:
            s.send(room, f"{s.user}:{k}")
    wait_for(lambda: all(s.answered == PER_SENDER for s in senders), "the senders' acks", timeout=30)
    assert not any(s.errors for s in senders), [s.errors[:1] for s in senders]
    acked = {s.user: [a["seq"] for a in s.acks] for s in senders}
    all_seqs = sorted(q for v in acked.values() for q in v)
    first = all_seqs[0]
    assert all_seqs == list(range(first, first + MESSAGES))          # gapless
    for seqs in acked.values():
        assert seqs == sorted(seqs)                                  # each sender's order kept
    return acked, first


def check_every_member_got_everything(cluster, members, room: str, acked: dict, first: int,
                                      before: int) -> None:
    def expected(p: Peer) -> int:
        return MESSAGES - len(acked.get(p.user, ()))

    wait_for(lambda: all(len(p.seqs.get(room, ())) >= expected(p) for p in members),
             "every member has every message", timeout=60, interval=0.2)
    fence_room(cluster, members, room, before)                       # anything extra has shown now
    for p in members:
        got = p.seqs.get(room, [])
        want = [q for q in range(first, first + MESSAGES) if q not in set(acked.get(p.user, ()))]
        assert got == want, f"{p.user}: {len(got)} msgs, first differences at " \
                            f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))}"


def fence_room(cluster, members, room: str, before: int) -> None:
    """Once this returns, every copy of the room's messages the cluster made has reached
    its member. Center has handled every ``rdlv`` (its own counter says so); a room_info
    round trip per gate then comes back down the center -> gate pipe after every copy
    center sent that gate; and each member's ping is answered from its session's queue
    after every frame the gate queued there before. (A live frame still held in the
    gate because the member's socket is full would go after the pong: the members' reader
    greenlets keep their sockets drained.)"""
    wait_for(lambda: admin(cluster, "/v1/stats")["counters"].get("rdlv", 0) - before >= MESSAGES,
             "center's rdlv counter", timeout=10)
    for gate in (0, 1):                                              # member i is on gate i % 2
        assert members[gate].ask("room_info", room=room)["t"] == "room_info"
    pool = Pool(100)
    for p in members:
        pool.spawn(p.ask, "ping", timeout=30)
    pool.join(raise_error=True)


def check_once_per_gate(cluster, room: str, senders, acked: dict, first: int) -> None:
    per_gate = {"gate1": MEMBERS // 2, "gate2": MEMBERS // 2}
    wait_for(lambda: sum(len(v) for v in out_records_of(cluster, room).values()) >= 2 * MESSAGES,
             "2 out records per message", timeout=30, interval=0.5)
    found = out_records_of(cluster, room)
    assert sorted(found) == list(range(first, first + MESSAGES))
    sender_gate = {s.user: ("gate1", "gate2")[i % 2] for i, s in enumerate(senders)}
    seq_sender = {q: u for u, v in acked.items() for q in v}
    for seq, records in found.items():
        assert sorted(g for g, _ in records) == ["gate1", "gate2"], (seq, records)   # once per gate
        counts = dict(records)
        assert sum(counts.values()) == MEMBERS - 1, (seq, records)
        for gate, count in counts.items():
            assert count == per_gate[gate] - (gate == sender_gate[seq_sender[seq]]), (seq, records)
