"""Issue 3, point 3: slow consumers, on the real cluster.

A client that stops reading in a room: the gate's memory stays bounded (VmRSS of the gate
process), the other members' latency is unchanged (p50 send -> msg, with and without the
stalled member), and once it reads again it sees a seq gap (the oldest live messages were
dropped, the newest kept). A client that stops reading under a DM flood is kicked with
``kicked{slow}`` and gets the rest at its next login.

The kicked client reads whole frames up to ``kicked{slow}``, its last frame, whether it
stopped reading or reads too slowly. Last, the idle timer of a session silent right after
its login (it was the login timer once).

The module's cluster has a small per-session outbox (``gate.outbox_bytes``), a send rate
high enough for a few senders to flood, and a short ``gate.login_timeout``.
"""
from __future__ import annotations

import statistics
import time

import gevent
import pytest

from client import dm_conv
from kit import Peer, conv_on_zone, fresh, frame, peers, split_frames, vm_rss_kib, wait_for, zone_names, zone_of


def kernel_send_buffer_max() -> int:
    """The most a TCP send buffer grows to by autotuning here (tcp_wmem's max): a stalled
    reader's kernel buffers take that much before the gate's outbox sees any of it."""
    with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as fh:
        return int(fh.read().split()[2])


OUTBOX = 256 * 1024
LOGIN_TIMEOUT = 2
DM_BODY = "y" * 4000
# DMs to a stalled reader: past the socket buffers and the outbox together, by a quarter
# (400 of them, 1.6 MB, fitted in a 4 MB autotuned send buffer now and then: no kick)
DM_FLOOD = (kernel_send_buffer_max() + OUTBOX) * 5 // 4 // len(DM_BODY) + 1
OVERRIDES = {"gate": {"outbox_bytes": OUTBOX, "send_rate": 100000, "send_burst": 100000,
                      "login_timeout": LOGIN_TIMEOUT, "idle_timeout": 30},
             "chat": {"replay_max": DM_FLOOD}}     # the next login replays the whole flood
FLOOD = 20000                    # room messages in the phase without a stall
# in the stalled phase: twice as many, so that what the gate buffers for a moment on a busy
# machine (ZeroMQ's queues while it lags, ~rate x lag) stays small beside what a stalled
# client would cost an unbounded gate (every byte pushed)
STALL_FLOOD = 2 * FLOOD
RATE = 4000                      # per second, all senders together: the healthy readers keep up
SENDERS = 2
BODY = "x" * 300                 # ~0.4 KB per frame: STALL_FLOOD frames are ~16 MB


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster(OVERRIDES)


def run_phase(room: str, senders: list[Peer], prober: Peer, healthy: Peer, count: int = FLOOD,
              interval: float = 0.02) -> list[float]:
    """Flood ``room`` (``count`` messages at RATE) while ``prober`` sends a probe every
    ``interval``; the latencies (s) from each probe's send to its arrival at ``healthy``."""
    per = count // len(senders)
    floods = [gevent.spawn(f.flood, room, per, BODY, RATE / len(senders)) for f in senders]
    sent_at = {}
    while not all(g.ready() for g in floods):
        cid = fresh("probe")
        sent_at[cid] = time.monotonic()
        prober.send(room, "probe", cid=cid)
        gevent.sleep(interval)
    gevent.joinall(floods, raise_error=True)
    wait_for(lambda: all(cid in healthy.arrived for cid in sent_at), "every probe at the healthy member",
             timeout=30)
    return [healthy.arrived[cid] - t for cid, t in sent_at.items()]


def test_stalled_room_member_bounded_memory_others_unaffected_sees_gap(cluster, clients):
    room = f"r:{fresh('live')}"
    [healthy] = peers(clients, gate=0, count=1, room=room, prefix="healthy")   # the stalled one's gate
    [prober] = peers(clients, gate=1, count=1, room=room, prefix="prober")
    senders = peers(clients, gate=1, count=SENDERS, room=room, prefix="flood")
    gate1 = cluster.pid("gate1")

    # phase 1: nobody stalls
    baseline = run_phase(room, senders, prober, healthy)
    # phase 2: a member on gate1 stops reading
    stalled = clients.raw(gate=0, rcvbuf=4096)
    stalled.login(fresh("stall"))
    joined = stalled.request("join", room=room)
    assert joined["t"] == "joined"
    start_seq = joined["last_seq"]
    rss_before = vm_rss_kib(gate1)
    with_stall = run_phase(room, senders, prober, healthy, STALL_FLOOD)
    last = max(a["seq"] for f in senders + [prober] for a in f.acks)
    wait_for(lambda: healthy.seqs[room][-1:] == [last], "the healthy member has everything", timeout=30)
    rss_after = vm_rss_kib(gate1)

    # the healthy member got every message once, in order, in both phases
    assert healthy.seqs[room] == list(range(1, last + 1))
    pushed_kib = STALL_FLOOD * (len(BODY) + 100) // 1024
    growth = rss_after - rss_before
    assert growth < pushed_kib // 3, f"gate1 grew {growth} KiB while {pushed_kib} KiB went to a stalled client"
    p50_base, p50_stall = statistics.median(baseline), statistics.median(with_stall)
    assert p50_stall <= 3 * p50_base + 0.05, (p50_base, p50_stall)

    # the stalled client reads again: increasing seqs, a gap (drop-oldest), the newest kept
    got = []
    while not got or got[-1] < last:
        body = stalled.read_frame(timeout=20)
        assert body is not None, f"the stalled client was disconnected after {got[-1:]}"
        if body.get("t") == "msg" and body.get("conv") == room:
            got.append(body["seq"])
    assert got == sorted(set(got)), "room msgs out of order or twice"
    assert got[0] == start_seq + 1 and got[-1] == last
    assert len(got) < last - start_seq, "no message was dropped: the outbox was not bounded"
    assert any(b - a > 1 for a, b in zip(got, got[1:])), "the drop left no visible gap"
    assert stalled.request("ping")["t"] == "pong"           # and it is still a working session
    for p in senders + [healthy, prober]:
        p.stop()


def dm_flood_to_a_stalled_reader(cluster, clients, count: int = DM_FLOOD):
    """A victim that stops reading right after login, flooded with DMs until its gate has
    handled every delivery: (victim name, its connection, the sender, the DM conv).

    The victim has read nothing when this returns. A witness on the victim's gate gets one
    DM from the same sender after the flood, in a DM owned by the same zone: once it has
    it, the gate has handled all the victim's deliveries (one zone, one center, in order).
    """
    victim_name = fresh("victim")
    victim = clients.raw(gate=0, rcvbuf=4096)
    victim.login(victim_name)
    [sender] = peers(clients, gate=1, count=1, prefix="sender")
    conv = dm_conv(sender.user, victim_name)
    zone = zone_of(cluster, conv)
    names = []

    def witness_dm(i):
        names.append(fresh("witness"))
        return dm_conv(sender.user, names[-1])
    witness_conv = conv_on_zone(cluster, zone, witness_dm)
    witness_name = [n for n in names if dm_conv(sender.user, n) == witness_conv][0]
    witness_conn = clients.raw(gate=0)
    witness_conn.login(witness_name)
    witness = Peer(witness_conn, witness_name)
    sender.flood_items([(conv, DM_BODY)] * count + [(witness_conv, "after the flood")])
    assert [a["seq"] for a in sender.acks if a["conv"] == conv] == list(range(1, count + 1))
    wait_for(lambda: witness.seqs.get(witness_conv) == [1], "the witness's DM", timeout=30)
    witness.stop()
    return victim_name, victim, sender, conv


def test_stalled_dm_reader_is_kicked_slow_and_gets_the_rest_at_next_login(cluster, clients):
    victim_name, victim, sender, conv = dm_flood_to_a_stalled_reader(cluster, clients)
    rest = victim.read_all(timeout=30)            # it reads again: what the gate wrote, up to its close
    assert frame({"t": "kicked", "reason": "slow"}) in rest, "no kicked{slow} in the bytes the stalled client got"
    bodies, cut = split_frames(rest)
    assert cut == b"", f"the stream breaks after {len(bodies)} frames ({len(cut)} bytes do not parse)"
    assert bodies[-1] == {"t": "kicked", "reason": "slow"}, \
        f"last frames: {[(b.get('t'), b.get('seq'), b.get('reason')) for b in bodies[-3:]]}"
    assert [b.get("t") for b in bodies].count("kicked") == 1
    pushed = [b["seq"] for b in bodies if b.get("t") == "msg"]
    assert pushed == list(range(1, len(pushed) + 1))            # nothing skipped before the kick
    assert len(pushed) < DM_FLOOD, "everything arrived: the reader was not slow enough to test anything"
    # at the next login every message comes (offline replay, nothing was recv'd), in order
    again = clients.user(victim_name, gate=1, register=False, push_queue=None)
    assert again.welcome["convs"][conv] == DM_FLOOD
    wait_for(lambda: len(again.msgs(conv)) >= DM_FLOOD, f"{DM_FLOOD} msgs replayed", timeout=60)
    again.fence()
    assert again.seqs(conv) == list(range(1, DM_FLOOD + 1))
    assert all(m["body"] == DM_BODY and m["from"] == sender.user for m in again.msgs(conv))
    sender.stop()


def test_slow_reader_gets_whole_frames_then_kicked_slow(cluster, clients):
    """A reader that reads, but too slowly: the frame partly written when the kick comes is
    finished before kicked{slow}, and nothing follows it."""
    victim_name = fresh("slowrd")
    victim = clients.raw(gate=0, rcvbuf=4096)
    victim.login(victim_name)
    [sender] = peers(clients, gate=1, count=1, prefix="sender")
    conv = dm_conv(sender.user, victim_name)
    chunks = []

    def read_slowly():                       # < 400 KB/s, while the DMs come at ~4 MB/s
        while True:
            victim.sock.settimeout(30)
            try:
                data = victim.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)
            gevent.sleep(0.01)

    reader = gevent.spawn(read_slowly)
    sender.flood(conv, 1000, DM_BODY, rate=1000)
    reader.join(timeout=60)
    sender.stop()
    assert reader.ready(), "the slow reader was never disconnected"
    bodies, cut = split_frames(b"".join(chunks))
    assert cut == b"", f"the stream breaks after {len(bodies)} frames ({len(cut)} bytes do not parse)"
    assert bodies and bodies[-1] == {"t": "kicked", "reason": "slow"}, \
        f"last frames: {[(b.get('t'), b.get('seq'), b.get('reason')) for b in bodies[-3:]]}"


def test_silent_session_after_login_gets_the_idle_timeout(cluster, clients):
    """The login is the last frame the client sent: the idle timeout (30 s here) applies
    from the welcome on, not the login timeout (2 s)."""
    conn = clients.raw(gate=0)
    conn.login(fresh("silent"), ping=False)           # the login is the last frame sent
    started = time.monotonic()
    try:
        body = conn.read_frame(timeout=LOGIN_TIMEOUT + 2)
    except TimeoutError:
        body = None
    assert body is None, f"after {time.monotonic() - started:.1f}s of silence: {body}"
    assert conn.request("ping")["t"] == "pong"


def test_silent_session_after_another_request_is_not_kicked_early(cluster, clients):
    """The same with one frame after the welcome (the way most clients do it)."""
    conn = clients.raw(gate=1)
    conn.login(fresh("silent"), ping=True)
    with pytest.raises(TimeoutError):
        conn.read_frame(timeout=LOGIN_TIMEOUT + 2)
    assert conn.request("ping")["t"] == "pong"
