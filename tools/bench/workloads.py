"""W2 direct messages, W3 broadcast, W4 connections (W1 lives in w1_room.py)."""
from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

import gevent
from gevent.pool import Pool

from cluster import convs, secrets
from cluster.codec import FrameReader, encode_frame, unpackb
from tools.bench import common
from tools.bench.runner import _print_median, _with_cluster
from tools.bench.sources import connect
from tools.bench.w1_room import pace


# -- W2: direct messages ------------------------------------------------------------------
MSG_HEAD = b"\xa1t\xa3msg"     # after the map header: the key "t" and the value "msg"
class Peer:
    def __init__(self, addr, user, token, other, i: int = 0):
        self.user, self.conv = user, convs.dm(user, other)
        self.sock = connect(addr, i)        # client i's own loopback address (sources.py)
        common.login_lean(self.sock, user, token)
        self.reader, self.sent_at = FrameReader(1 << 21), {}
        self.lat, self.msgs, self.errors, self.rids = [], 0, 0, itertools.count(10)

    def run(self) -> None:
        """Time acks, count msgs: a msg (its encoding starts with ``t: msg``) is counted
        undecoded, which keeps the generator's core and its own delays low."""
        while True:
            data = self.sock.recv(262144)
            if not data:
                return
            now = time.perf_counter()
            for body in self.reader.feed(data):
                if body[1:7] == MSG_HEAD:
                    self.msgs += 1
                    continue
                m = unpackb(body)
                if m["t"] == "ack":
                    self.lat.append((now - self.sent_at.pop(m["rid"])) * 1000)
                elif m["t"] == "msg":
                    self.msgs += 1
                elif m["t"] == "error":
                    self.errors += 1

    def send(self) -> None:
        rid = next(self.rids)
        self.sent_at[rid] = time.perf_counter()
        self.sock.sendall(encode_frame({"t": "send", "rid": rid, "conv": self.conv,
                                        "cid": f"c{rid}", "body": "x" * 64}))


def w2_step(peers, rate, seconds, meter) -> dict:
    """Send at ``rate`` for ``seconds``, then wait up to 5 s for the last acks. acks_s:
    acked messages per second of the sending window (a step with any unanswered fails);
    CPU is read when sending ends; cpu_us is the cluster's busy core-µs per acked DM."""
    for p in peers:
        p.lat.clear()
    m0, e0 = sum(p.msgs for p in peers), sum(p.errors for p in peers)
    meter.mark()
    start = time.monotonic()
    until = start + seconds
    gevent.joinall([gevent.spawn(pace, p, len(peers) / rate, until, k / len(peers), start)
                    for k, p in enumerate(peers)])
    cpu = meter.read()
    common_wait(lambda: not any(p.sent_at for p in peers), 5.0)
    lat = [x for p in peers for x in p.lat]
    acked = len(lat)
    acks_s = acked / (until - start)
    return {"rate": rate, "acked": acked, "acks_s": acks_s,
            "delivered": sum(p.msgs for p in peers) - m0,
            "errors": sum(p.errors for p in peers) - e0, "unanswered": sum(len(p.sent_at) for p in peers),
            "p50_ms": common.percentile(lat, 50), "p99_ms": common.percentile(lat, 99),
            "server_busy": cpu["server_busy"], "cpu_us": cpu["server_busy"] * 1e6 / max(acks_s, 1e-9),
            "gen_busy": cpu["generator_busy"], "top": common.top_processes(cpu["per_process"]),
            "per_process": cpu["per_process"],
            "valid": cpu["generator_busy"] <= 0.9, "ratio": 1.0, "deliveries_s": acks_s,
            "per_core_s": acks_s / max(cpu["server_busy"], 1e-9)}


def w2_passes(row: dict) -> bool:
    return row["p99_ms"] < 50 and not row["errors"] and not row["unanswered"]


def common_wait(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        gevent.sleep(0.05)


def w2_run(cl, tokens, rates, seconds) -> list[dict]:
    names, gates = sorted(tokens), cl.gates()
    specs = []
    for i in range(0, len(names), 2):
        a, b = names[i], names[i + 1]
        specs += [(gates[0], a, tokens[a], b, i), (gates[-1], b, tokens[b], a, i + 1)]   # across gates if several
    peers = list(Pool(200).imap(lambda s: Peer(*s), specs))
    for p in peers:
        gevent.spawn(p.run)
    meter, rows = common.CpuMeter(cl), []
    for rate in rates:
        row = w2_step(peers, rate, seconds, meter)
        rows.append(row)
        if not w2_passes(row):
            break
    return rows


W2_RATES = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000, 30000]
W2_COLS = ["rate", "acked", "acks_s", "delivered", "errors", "p50_ms", "p99_ms", "server_busy",
           "cpu_us", "gen_busy", "valid", "top"]
W2_SUMMARY = ["topology", "runs", "knee", "knee_p99", "cpu_us_500", "cpu_us_2000", "cpu_us_knee",
              "busy_500", "busy_knee"]


def bench_w2(args) -> int:
    """W2 on each topology of ``--topology`` (the default config's 2 gates + 2 zones beside
    1+1), repeats alternating between them; a table per run, then medians per topology."""
    pairs = args.size or 500
    rates = args.rates or W2_RATES
    runs: dict = {}
    summary = []
    for rep in range(args.repeat):
        for label, gates, zones in topologies(args):
            one = argparse.Namespace(**{**vars(args), "gates": gates, "zones": zones})
            rows = _with_cluster(one, lambda c, t: w2_run(c, t, rates, args.seconds), 2 * pairs,
                                 extra={"gate": {"send_rate": 30, "send_burst": 60}})
            print(f"\nW2 pairs={pairs} {label} ({gates} gate(s), {zones} zone(s)) run {rep + 1}/{args.repeat}")
            print(common.table(rows, W2_COLS))
            runs.setdefault(label, []).append(rows)
            summary.extend(dict(r, run=rep, topology=label) for r in rows)
    print(f"\nW2 pairs={pairs}: medians over runs (knee: highest acked msgs/s with p99 < 50 ms; "
          "cpu_us: cluster core-µs per DM)")
    print(common.table([w2_summary(label, rows) for label, rows in runs.items()], W2_SUMMARY))
    print("report:", common.write_report("w2", summary, {"pairs": pairs, "rates": rates,
                                                         "topologies": [t[0] for t in topologies(args)]}))
    return 0


def topologies(args) -> list[tuple[str, int, int]]:
    """(label, gates, zones): ``--gates``/``--zones`` name one; else ``--topology``."""
    if args.gates or args.zones:
        gates, zones = args.gates or 1, args.zones or 1
        return [(f"{gates}+{zones}", gates, zones)]
    return [t for t in TOPOLOGIES if args.topology in ("both", t[0])]


TOPOLOGIES = [("default", 2, 2), ("1+1", 1, 1)]


def w2_summary(label: str, runs: list[list[dict]]) -> dict:
    """Medians over runs: the knee, and CPU per DM at 500/s, 2,000/s and at the knee."""
    knees = [max((r for r in rows if w2_passes(r)), key=lambda r: r["acks_s"], default=None)
             for rows in runs]
    at = lambda rate, key: _median([r[key] for rows in runs for r in rows if r["rate"] == rate])
    got = [k for k in knees if k]
    return {"topology": label, "runs": len(runs), "knee": _median([k["acks_s"] for k in got]),
            "knee_p99": _median([k["p99_ms"] for k in got]),
            "cpu_us_500": at(500, "cpu_us"), "cpu_us_2000": at(2000, "cpu_us"),
            "cpu_us_knee": _median([k["cpu_us"] for k in got]),
            "busy_500": at(500, "server_busy"), "busy_knee": _median([k["server_busy"] for k in got])}


def _median(values: list) -> float:
    return statistics.median(values) if values else float("nan")


# -- W3: one broadcast to every session ---------------------------------------------------
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TS = struct.Struct("@qq")


class Listener:
    """Logged-in session that timestamps (kernel receive time) the next data it gets."""

    def __init__(self, addr, user, token, i: int = 0):
        self.sock = connect(addr, i)
        common.login_lean(self.sock, user, token)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.arrived = None

    def wait_one(self) -> None:
        data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(_TS.size))
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TS.unpack(raw[:_TS.size])
                self.arrived = sec + nsec / 1e9
        if self.arrived is None and data:
            self.arrived = time.time()


def admin_post(cfg, path: str, payload: dict) -> dict:
    center = cfg.nodes_of("center")[0]
    req = urllib.request.Request(f"http://{center.admin_host}:{center.admin_port}{path}",
                                 data=json.dumps(payload).encode(),
                                 headers={"Authorization": f"Bearer {secrets.cluster_secret(cfg)}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def w3_once(cl, listeners, meter) -> dict:
    for li in listeners:
        li.arrived = None
    jobs = [gevent.spawn(li.wait_one) for li in listeners]
    gevent.sleep(0.5)
    meter.mark()
    t0 = time.time()
    admin_post(cl.cfg, "/v1/broadcast", {"text": "bench broadcast"})
    gevent.joinall(jobs, timeout=30)
    cpu = meter.read()
    got = sorted(li.arrived - t0 for li in listeners if li.arrived is not None)
    n = len(listeners)
    at = lambda q: got[min(len(got) - 1, max(0, int(q * n) - 1))] * 1000 if len(got) >= q * n else float("nan")
    return {"sessions": n, "reached": len(got), "t50_ms": at(0.5), "t99_ms": at(0.99), "t100_ms": at(1.0),
            "server_busy": cpu["server_busy"], "gen_busy": cpu["generator_busy"],
            "valid": cpu["generator_busy"] <= 0.9}


def w3_run(cl, tokens, repeat) -> list[dict]:
    gates, names = cl.gates(), sorted(tokens)
    specs = [(gates[i % len(gates)], n, tokens[n], i) for i, n in enumerate(names)]
    listeners = list(Pool(200).imap(lambda s: Listener(*s), specs))
    meter = common.CpuMeter(cl)
    return [w3_once(cl, listeners, meter) for _ in range(repeat)]


def bench_w3(args) -> int:
    size = args.size or 10000
    rows = _with_cluster(args, lambda c, t: w3_run(c, t, args.repeat), size)
    print(f"\nW3 broadcast to {size} sessions")
    print(common.table(rows, ["sessions", "reached", "t50_ms", "t99_ms", "t100_ms", "server_busy", "valid"]))
    full = sorted(r["t100_ms"] for r in rows)
    print(f"W3 size={size}: median time to 100% {full[len(full) // 2]:.1f} ms")
    print("report:", common.write_report("w3", rows, {"sessions": size, "gates": args.gates,
                                                      "zones": args.zones}))
    return 0


RUNNERS = {"w2": bench_w2, "w3": bench_w3}


# -- W4: idle connections -----------------------------------------------------------------
PER_PROCESS = 16000


def w4_run(cl, tokens, per_gate) -> list[dict]:
    gates = sorted(cl.cfg.nodes_of("gate"), key=lambda n: n.name)
    before = {g.name: cl.rss(g.name) for g in gates}
    procs, first = [], 0
    for g in gates:
        for j in range(0, per_gate, PER_PROCESS):
            n = min(PER_PROCESS, per_gate - j)
            procs.append((g.name, subprocess.Popen(       # spread over addresses (sources.py)
                [sys.executable, "-m", "tools.bench.w4_client", cl.config_path, g.host,
                 str(g.tcp_port), str(first), str(n)],
                cwd=common.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)))
            first += n
    try:
        held = {g.name: [0, 0] for g in gates}
        for name, p in procs:
            words = p.stdout.readline().split()
            if len(words) == 3:
                held[name][0] += int(words[1])
                held[name][1] += int(words[2])
        return _w4_rows(cl, gates, before, held)
    finally:
        for _, p in procs:
            p.stdin.close()
        for _, p in procs:
            p.wait(timeout=60)


def _w4_rows(cl, gates, before, held) -> list[dict]:
    rows = []
    for g in gates:
        rss, (n, failed) = cl.rss(g.name), held[g.name]
        rows.append({"gate": g.name, "sessions": n, "failed": failed, "before_mb": before[g.name] / 2**20,
                     "rss_mb": rss / 2**20, "kb_per_session": (rss - before[g.name]) / 1024 / max(1, n)})
    rows.append({"gate": "total", "sessions": sum(r["sessions"] for r in rows),
                 "failed": sum(r["failed"] for r in rows), "rss_mb": sum(r["rss_mb"] for r in rows),
                 "kb_per_session": sum(r["kb_per_session"] * r["sessions"] for r in rows)
                 / max(1, sum(r["sessions"] for r in rows))})
    return rows


def bench_w4(args) -> int:
    total = args.size or 100000
    gates = max(args.gates, -(-total // 17000))
    args.gates = gates
    per_gate = -(-total // gates)       # round up: at least `total` in all
    rows = _with_cluster(args, lambda c, t: w4_run(c, t, per_gate), per_gate * gates,
                         extra={"gate": {"max_connections": 19000}})
    print(f"\nW4 {per_gate * gates} idle sessions over {gates} gates")
    print(common.table(rows, ["gate", "sessions", "failed", "before_mb", "rss_mb", "kb_per_session"]))
    print("report:", common.write_report("w4", rows, {"sessions": total, "gates": gates}))
    return 0


RUNNERS["w4"] = bench_w4
