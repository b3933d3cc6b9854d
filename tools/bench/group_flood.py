"""Group flood: DM send→ack p99 while abusers flood the zone with group_create.

python -m tools.bench.group_flood [--pairs 50] [--rate 200] [--seconds 5] [--abusers 1]
                                  [--creates 150] [--group-work N] [--repeat 1]

The incident this reproduces: 150 ``group_create`` with 8,000 unknown names each stalled
every DM on the zone. Those are capped now, so the flood is the most the gate lets
through: each create names ``chat.group_max_members - 1`` names nobody registered (fresh
ones each time, so no cache helps), and each abuser keeps ``gate.max_inflight`` creates
in flight, ``--creates`` of them in all. ``--pairs`` DM pairs send at ``--rate`` msgs/s in
total; the same window is measured without the flood, then with it, on one pinned
cluster (tools/bench/common.py), and the DM p99 of both is printed. ``--group-work``
sets ``zone.group_work`` (a huge value shows the zone without its per-tick bound).
Bounded: every phase lasts ``--seconds``, and the wait for the last answers 10 s at most.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import argparse
import collections
import itertools
import os
import sys
import time

import gevent

from cluster import config as config_mod
from cluster.codec import FrameReader, encode_frame, unpackb
from tools.bench import common
from tools.bench.flood_common import add_cluster_args, add_dm_args, dm_extra, dm_peers
from tools.bench.runner import _with_cluster
from tools.bench.sources import connect
from tools.bench.w1_room import pace
from tools.bench.workloads import common_wait

ANSWER_WAIT = 10.0


class Abuser:
    """One session that keeps ``window`` group_creates of unknown names in flight."""

    def __init__(self, addr, user, token, i: int, names: int, window: int):
        self.user, self.names, self.window = user, names, window
        self.sock = connect(addr, i)
        common.login_lean(self.sock, user, token)
        self.reader = FrameReader(1 << 21)
        self.sent = self.answered = 0
        self.codes: collections.Counter = collections.Counter()
        self.first_sent = self.last_answer = None
        self.groups = itertools.count()

    def run(self) -> None:
        while True:
            data = self.sock.recv(262144)
            if not data:
                return
            for body in self.reader.feed(data):
                m = unpackb(body)
                if "rid" not in m:
                    continue
                self.answered += 1
                self.codes[m.get("code") if m["t"] == "error" else m["t"]] += 1
                self.last_answer = time.monotonic()

    def create(self) -> bytes:
        k = next(self.groups)
        salt = os.urandom(4).hex()
        members = [f"x{salt}{k:x}n{j}" for j in range(self.names)]      # nobody has these
        return encode_frame({"t": "group_create", "rid": k + 1, "group": f"g:{self.user}{salt}{k}",
                             "members": members})

    def flood(self, count: int, until: float) -> None:
        self.first_sent = time.monotonic()
        while self.sent < count and time.monotonic() < until:
            if self.sent - self.answered >= self.window:
                gevent.sleep(0.001)
                continue
            self.sock.sendall(self.create())
            self.sent += 1


def dm_phase(peers, rate: float, seconds: float, abusers=(), creates: int = 0) -> dict:
    """DMs at ``rate`` for ``seconds`` (and the abusers' flood alongside); its row."""
    for p in peers:
        p.lat.clear()
    e0 = sum(p.errors for p in peers)
    start = time.monotonic()
    until = start + seconds
    jobs = [gevent.spawn(pace, p, len(peers) / rate, until, k / len(peers), start)
            for k, p in enumerate(peers)]
    jobs += [gevent.spawn(a.flood, creates, until) for a in abusers]
    gevent.joinall(jobs)
    common_wait(lambda: not any(p.sent_at for p in peers)
                and all(a.answered >= a.sent for a in abusers), ANSWER_WAIT)
    lat = [x for p in peers for x in p.lat]
    codes = collections.Counter()
    for a in abusers:
        codes.update(a.codes)
    done = [a.last_answer - a.first_sent for a in abusers if a.last_answer and a.first_sent]
    return {"phase": "flood" if abusers else "quiet", "dm_acked": len(lat),
            "dm_errors": sum(p.errors for p in peers) - e0,
            "dm_unanswered": sum(len(p.sent_at) for p in peers),
            "p50_ms": common.percentile(lat, 50), "p99_ms": common.percentile(lat, 99),
            "max_ms": max(lat) if lat else float("nan"),
            "creates": sum(a.sent for a in abusers),
            "answers": " ".join(f"{k}={v}" for k, v in sorted(codes.items())) or "-",
            "flood_s": max(done) if done else 0.0}


def run(cl, tokens, args) -> list[dict]:
    cfg = config_mod.load(cl.config_path)
    names, gates = sorted(tokens), cl.gates()
    dm_names, bad = names[:2 * args.pairs], names[2 * args.pairs:]
    peers = dm_peers(gates, tokens, dm_names)
    abusers = [Abuser(gates[k % len(gates)], u, tokens[u], len(peers) + k,
                      cfg.chat.group_max_members - 1, cfg.gate.max_inflight) for k, u in enumerate(bad)]
    greenlets = [gevent.spawn(x.run) for x in [*peers, *abusers]]
    try:
        dm_phase(peers, args.rate, min(1.0, args.seconds))            # warm up, not reported
        return [dm_phase(peers, args.rate, args.seconds),
                dm_phase(peers, args.rate, args.seconds, abusers, args.creates)]
    finally:
        gevent.killall(greenlets)
        for x in [*peers, *abusers]:
            x.sock.close()


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tools.bench.group_flood")
    add_dm_args(p)
    p.add_argument("--abusers", type=int, default=1, help="sessions flooding group_create")
    p.add_argument("--creates", type=int, default=150, help="group_creates per abuser")
    p.add_argument("--group-work", type=int, default=None, help="zone.group_work (default: the config's)")
    add_cluster_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    extra = dm_extra()
    if args.group_work is not None:
        extra["zone"] = {"group_work": args.group_work}
    rows = []
    for rep in range(args.repeat):
        got = _with_cluster(args, lambda c, t: run(c, t, args), 2 * args.pairs + args.abusers, extra=extra)
        rows.extend(dict(r, run=rep) for r in got)
    print(f"\ngroup flood: {args.pairs} DM pairs at {args.rate:g} msgs/s, {args.abusers} abuser(s) x "
          f"{args.creates} creates, zone.group_work={args.group_work or 'default'}")
    print(common.table(rows, ["run", "phase", "dm_acked", "dm_errors", "dm_unanswered", "p50_ms", "p99_ms",
                              "max_ms", "creates", "flood_s", "answers"]))
    for phase in ("quiet", "flood"):
        p99 = sorted(r["p99_ms"] for r in rows if r["phase"] == phase)
        print(f"DM send→ack p99 {phase}: {p99[len(p99) // 2]:.1f} ms (median of {len(p99)})")
    print("report:", common.write_report("group_flood", rows, vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
