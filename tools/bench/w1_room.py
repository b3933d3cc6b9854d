"""W1 room fan-out: M members in one room, S senders, total rate stepped up.

Receivers only count frames; senders are the probes: they decode what they get and time
``send -> msg`` of the others' messages (the sender's timestamp rides in the body). A step
passes while delivered >= 99.9% and p99 < 250 ms; the capacity is the last passing step's
deliveries per second. A step is marked invalid (a lower bound only) when the generator's
own core was above 90% busy.
"""
from __future__ import annotations

import itertools
import time

import gevent

from cluster.codec import FrameReader, encode_frame, unpackb
from tools.bench.common import FrameCounter, login_lean, percentile
from tools.bench.sources import connect

ROOM = "r:bench"


class Receiver:
    def __init__(self, addr, user, token, i: int = 0):
        self.sock = connect(addr, i)        # client i's own loopback address (sources.py)
        login_lean(self.sock, user, token, ROOM)
        self.counter = FrameCounter()

    def run(self) -> None:
        recv, feed = self.sock.recv, self.counter.feed
        while True:
            data = recv(262144)
            if not data:
                return
            feed(data)


class Sender:
    def __init__(self, addr, user, token, i: int = 0):
        self.user = user
        self.sock = connect(addr, i)
        login_lean(self.sock, user, token, ROOM)
        self.reader = FrameReader(1 << 21)
        self.lat: list = []
        self.acks = self.msgs = self.errors = 0
        self.cids = itertools.count()

    def run(self) -> None:
        while True:
            data = self.sock.recv(262144)
            if not data:
                return
            now = time.time() * 1000
            for body in self.reader.feed(data):
                m = unpackb(body)
                t = m.get("t")
                if t == "msg":
                    self.msgs += 1
                    self.lat.append(now - m["body"]["ts"])
                elif t == "ack":
                    self.acks += 1
                elif t == "error":
                    self.errors += 1

    def send(self) -> None:
        body = {"ts": time.time() * 1000, "pad": "x" * 40}
        self.sock.sendall(encode_frame({"t": "send", "rid": next(self.cids) + 10, "conv": ROOM,
                                        "cid": f"{self.user}-{next(self.cids)}", "body": body}))


def pace(sender, interval: float, until: float, phase: float = 0.0, start: float | None = None) -> None:
    """Call ``sender.send()`` every ``interval`` seconds from ``phase`` of an interval after
    ``start`` (default: now) until ``until``. A common ``start`` keeps the count exact
    (rate x seconds) however long spawning the pacers took."""
    nxt = (time.monotonic() if start is None else start) + phase * interval
    gevent.sleep(max(0.0, nxt - time.monotonic()))
    while nxt < until:
        sender.send()
        nxt += interval
        gevent.sleep(max(0.0, nxt - time.monotonic()))


def total_frames(receivers) -> int:
    return sum(r.counter.frames for r in receivers)


def settle(receivers, senders, expected_frames: int, timeout: float = 5.0) -> None:
    """Wait until the counts reach what was sent or stop growing."""
    deadline, last, still = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline:
        now = total_frames(receivers) + sum(s.msgs for s in senders)
        if now >= expected_frames:
            return
        still = still + 1 if now == last else 0
        if still >= 5:
            return
        last = now
        gevent.sleep(0.1)


def run_step(receivers, senders, rate: float, seconds: float, meter) -> dict:
    members = len(receivers) + len(senders)
    f0 = total_frames(receivers) + sum(s.msgs for s in senders)
    a0, e0 = sum(s.acks for s in senders), sum(s.errors for s in senders)
    for s in senders:
        s.lat.clear()
    meter.mark()
    until = time.monotonic() + seconds
    jobs = [gevent.spawn(pace, s, len(senders) / rate, until, k / len(senders))
            for k, s in enumerate(senders)]
    gevent.joinall(jobs)
    sent = sum(s.acks for s in senders) - a0
    settle(receivers, senders, f0 + sent * (members - 1))
    cpu = meter.read()
    delivered = total_frames(receivers) + sum(s.msgs for s in senders) - f0
    lat = [x for s in senders for x in s.lat]
    wall = cpu["wall"]
    return {"rate": rate, "sent": sent, "errors": sum(s.errors for s in senders) - e0,
            "delivered": delivered, "expected": sent * (members - 1),
            "ratio": delivered / max(1, sent * (members - 1)),
            "deliveries_s": delivered / wall, "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99), "server_busy": cpu["server_busy"],
            "per_core_s": delivered / wall / max(cpu["server_busy"], 1e-9),
            "gen_busy": cpu["generator_busy"], "valid": cpu["generator_busy"] <= 0.9}


def connect_all(factory, specs, concurrency: int = 200) -> list:
    from gevent.pool import Pool
    pool = Pool(concurrency)
    return list(pool.imap(lambda spec: factory(*spec), specs))


def pinger(conns, every: float = 20.0) -> None:
    """Keep receivers past the idle timeout."""
    frame = encode_frame({"t": "ping"})
    while True:
        gevent.sleep(every)
        for c in conns:
            try:
                c.sock.sendall(frame)
            except OSError:
                pass


def setup(cluster, tokens: dict, senders: int) -> tuple[list, list]:
    gates = cluster.gates()
    names = sorted(tokens)
    specs = [(gates[i % len(gates)], n, tokens[n], i) for i, n in enumerate(names)]
    send_conns = connect_all(Sender, specs[:senders])
    recv_conns = connect_all(Receiver, specs[senders:])
    greenlets = [gevent.spawn(c.run) for c in [*send_conns, *recv_conns]]
    greenlets.append(gevent.spawn(pinger, [*send_conns, *recv_conns]))
    return recv_conns, send_conns, greenlets


def run(cluster, tokens: dict, senders: int, rates: list, seconds: float, meter) -> list[dict]:
    receivers, send_conns, greenlets = setup(cluster, tokens, senders)
    rows = []
    for rate in rates:
        row = run_step(receivers, send_conns, rate, seconds, meter)
        row["members"] = len(tokens)
        rows.append(row)
        if row["ratio"] < 0.999 or row["p99_ms"] >= 250:
            break
    gevent.killall(greenlets)
    for c in [*receivers, *send_conns]:
        c.sock.close()
    return rows
