"""python -m tools.bench {w1,w2,w3,w4,rtt,idle} [options]: the benchmark suite.

Each workload starts its own cluster (every process pinned to core 0), runs the load
from this process pinned to core 1, prints a table and writes JSON under reports/bench/.
The cluster is sized for the one core it gets: one gate and one zone (``--gates``,
``--zones``; W4 adds gates for the 20,000-files-per-process limit) beside login, center,
dc, log and Redis. Every role still runs as its own process. W2 runs the shipped config's
topology (2 gates + 2 zones) beside 1+1 (``--topology``) and reports the cluster's CPU per
DM; ``idle`` measures an idle cluster with no clients and with ``--sessions`` idle ones.
W1 ``--passive F`` makes a fraction F of the receivers passive viewers (digests),
``--compare`` runs all-active and passive side by side (docs/capacity.md, "Passive
viewers (W1)"); past ``--per-process`` members W1 splits its receivers over subprocesses.
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
    w1.add_argument("--passive", type=float, default=0.0,
                    help="fraction of the receivers that join passive (digests), e.g. 0.9")
    w1.add_argument("--compare", action="store_true",
                    help="all-active and passive (--passive, default 0.9) runs, side by side")
    w1.add_argument("--per-process", type=int, default=None,
                    help="client sockets per generator process; more members are split over "
                         "subprocesses (default 15000)")
    for name, helptext in (("w2", "direct messages"), ("w3", "broadcast"), ("w4", "connections"),
                           ("rtt", "DM round trip, one in flight")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--size", type=int, default=None)
        sp.add_argument("--seconds", type=float, default=8)
        sp.add_argument("--rates", type=_ladder, default=None)
    idle = sub.add_parser("idle", help="CPU of an idle cluster: no clients, then idle sessions")
    idle.add_argument("--sessions", type=int, default=10000)
    idle.add_argument("--seconds", type=float, default=20)
    idle.add_argument("--ping-every", type=float, default=20.0,
                      help="seconds between two pings of one session (0: none)")
    idle.add_argument("--settle", type=float, default=5,
                      help="seconds after the cluster is ready (and after the logins) before measuring")
    for name in ("w2", "idle"):
        sub.choices[name].add_argument(
            "--topology", choices=["default", "1+1", "both"], default="both" if name == "w2" else "default",
            help="default: the shipped config's 2 gates + 2 zones; 1+1: one gate, one zone")
    for sp in sub.choices.values():
        sp.add_argument("--repeat", type=int, default=3)
        sp.add_argument("--gates", type=int, default=None, help="gate processes (default 1; "
                        "w2 and idle: the --topology)")
        sp.add_argument("--zones", type=int, default=None, help="zone processes (default 1; "
                        "w2 and idle: the --topology)")
        sp.add_argument("--redis-cluster", action="store_true",
                        help="store on a Redis Cluster, 3 masters + 3 replicas (Debian's redis-server 7)")
        sp.add_argument("--min-replicas", type=int, default=None,
                        help="redis.min_replicas_acked (default: 1 on --redis-cluster, 0 single)")
    args = p.parse_args(argv)
    if args.workload not in ("w2", "idle"):
        args.gates, args.zones = args.gates or 1, args.zones or 1
    return args


def default_rates(members: int) -> list[float]:
    target = 1_000_000 / members            # msgs/s that would give 1M deliveries/s
    return [round(target * f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]


def best(rows: list[dict]) -> dict | None:
    """The highest passing step (ratio, p99 and, with passive viewers, their coverage)."""
    from tools.bench.w1_room import passes
    ok = [r for r in rows if passes(r)]
    return max(ok, key=lambda r: r["deliveries_s"]) if ok else None


W1_COLS = ["rate", "sent", "ratio", "deliveries_s", "p50_ms", "p99_ms", "server_busy",
           "per_core_s", "gen_busy", "valid", "top"]
W1_PASSIVE_COLS = ["rate", "sent", "passive", "active_msgs", "ratio", "digests", "deliveries_s",
                   "passive_cover", "digest_gaps", "p50_ms", "p99_ms", "server_busy",
                   "per_core_s", "gen_busy", "valid"]
COMPARE_COLS = ["rate", "act_deliv_s", "pas_deliv_s", "deliv_cut", "act_busy", "pas_busy",
                "cpu_cut", "act_p50", "pas_p50", "act_p99", "pas_p99", "act_ok", "pas_ok"]


def bench_w1(args) -> int:
    from tools.bench import w1_room
    if not 0 <= args.passive < 1:
        raise SystemExit("--passive is a fraction of the receivers: 0 <= p < 1")
    per_process = args.per_process or w1_room.PER_PROCESS
    fractions = [0.0, args.passive or 0.9] if args.compare else [args.passive]
    summary = []
    for members in args.members:
        rates = args.rates or default_rates(members)
        runs: dict = {f: [] for f in fractions}
        for rep in range(args.repeat):
            for frac in fractions:              # alternating: the box's noise hits both
                plain = not frac and not args.compare
                rows = _with_cluster(args, lambda c, toks: w1_room.run(
                    c, toks, args.senders, rates, args.seconds, common.CpuMeter(c), passive=frac,
                    per_process=per_process, send_window=not plain,
                    stop_on_fail=not args.compare), members)
                label = "" if plain else (f" passive={frac:.0%}" if frac else " all active")
                print(f"\nW1 members={members}{label} run {rep + 1}/{args.repeat}")
                print(common.table(rows, W1_PASSIVE_COLS if frac else W1_COLS))
                _warn_digests(rows)
                runs[frac].append(rows)
                summary.extend(dict(r, run=rep) if plain else dict(r, run=rep, passive_fraction=frac)
                               for r in rows)
        for frac in fractions:
            name = "W1" if not frac and not args.compare else (
                f"W1 passive {frac:.0%}" if frac else "W1 all active")
            _print_median(name, members, [best(rows) for rows in runs[frac]], args)
        if args.compare:
            print(f"\nW1 members={members}: all active vs {fractions[1]:.0%} passive "
                  "(medians; cut = 1 - passive/active)")
            print(common.table(w1_room.compare(runs[0.0], runs[fractions[1]]), COMPARE_COLS))
    print("report:", common.write_report("w1", summary, vars(args) | {"rates": None}))
    return 0


def _warn_digests(rows: list[dict]) -> None:
    """Digests that broke the spec (w1_room.DigestTally), and msgs a passive viewer got."""
    for r in rows:
        odd = {k: r.get(k) for k in ("digest_gaps", "digest_bad", "digest_short", "digest_early",
                                     "passive_msgs") if r.get(k)}
        if odd:
            print(f"  rate {r['rate']:g}: " + ", ".join(f"{k} {v:,}" for k, v in odd.items()))


def main(argv=None) -> int:
    args = parse(argv)
    from tools.bench import rtt
    from tools.bench import idle
    runner = {"w1": bench_w1, "rtt": rtt.bench_rtt, "idle": idle.bench_idle}.get(args.workload)
    if runner is None:
        from tools.bench import workloads
        runner = workloads.RUNNERS[args.workload]
    return runner(args)


if __name__ == "__main__":
    sys.exit(main())
