"""python -m tools.bench {w1,w2,w3,w4} [options]: the benchmark suite.

Each workload starts its own cluster (every process pinned to core 0), runs the load
from this process pinned to core 1, prints a table and writes JSON under reports/bench/.
The cluster is sized for the one core it gets: one gate and one zone (``--gates``,
``--zones``; W4 adds gates for the 20,000-files-per-process limit) beside login, center,
dc, log and Redis. Every role still runs as its own process.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import argparse
import sys

from tools.bench import common
from tools.bench.runner import _print_median, _with_cluster


def _ladder(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tools.bench")
    sub = p.add_subparsers(dest="workload", required=True)
    w1 = sub.add_parser("w1", help="room fan-out")
    w1.add_argument("--members", type=int, nargs="+", default=[1000, 5000])
    w1.add_argument("--senders", type=int, default=50)
    w1.add_argument("--rates", type=_ladder, default=None, help="msgs/s steps, e.g. 100,200,400")
    w1.add_argument("--seconds", type=float, default=8)
    for name, helptext in (("w2", "direct messages"), ("w3", "broadcast"), ("w4", "connections"),
                           ("rtt", "DM round trip, one in flight")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--size", type=int, default=None)
        sp.add_argument("--seconds", type=float, default=8)
        sp.add_argument("--rates", type=_ladder, default=None)
    for sp in sub.choices.values():
        sp.add_argument("--repeat", type=int, default=3)
        sp.add_argument("--gates", type=int, default=1, help="gate processes (default 1)")
        sp.add_argument("--zones", type=int, default=1, help="zone processes (default 1)")
        sp.add_argument("--redis-cluster", action="store_true",
                        help="store on a Redis Cluster, 3 masters + 3 replicas (Debian's redis-server 7)")
        sp.add_argument("--min-replicas", type=int, default=None,
                        help="redis.min_replicas_acked (default: 1 on --redis-cluster, 0 single)")
    return p.parse_args(argv)


def default_rates(members: int) -> list[float]:
    target = 1_000_000 / members            # msgs/s that would give 1M deliveries/s
    return [round(target * f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]


def best(rows: list[dict]) -> dict | None:
    """The highest passing step."""
    ok = [r for r in rows if r["ratio"] >= 0.999 and r["p99_ms"] < 250]
    return max(ok, key=lambda r: r["deliveries_s"]) if ok else None


def bench_w1(args) -> int:
    from tools.bench import w1_room
    summary = []
    for members in args.members:
        rates = args.rates or default_rates(members)
        caps = []
        for rep in range(args.repeat):
            rows = _with_cluster(args, lambda c, toks: w1_room.run(
                c, toks, args.senders, rates, args.seconds, common.CpuMeter(c)), members)
            print(f"\nW1 members={members} run {rep + 1}/{args.repeat}")
            print(common.table(rows, ["rate", "sent", "ratio", "deliveries_s", "p50_ms", "p99_ms",
                                      "server_busy", "per_core_s", "gen_busy", "valid"]))
            top = best(rows)
            caps.append(top)
            summary.extend(dict(r, run=rep) for r in rows)
        _print_median("W1", members, caps, args)
    print("report:", common.write_report("w1", summary, vars(args) | {"rates": None}))
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    from tools.bench import rtt
    runner = {"w1": bench_w1, "rtt": rtt.bench_rtt}.get(args.workload)
    if runner is None:
        from tools.bench import workloads
        runner = workloads.RUNNERS[args.workload]
    return runner(args)


if __name__ == "__main__":
    sys.exit(main())
