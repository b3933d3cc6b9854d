"""DM round trip: one message in flight at a time, send -> ack and send -> msg (ms).

python -m tools.bench rtt [--size 1000]: p50/p99/max over N messages between two users on
the first and the last gate (different gates with --gates 2 or more), on an otherwise idle
pinned cluster (the rate limit is raised for it).
"""
from __future__ import annotations

import time

from client import Client
from cluster import convs
from tools.bench import common
from tools.bench.runner import _with_cluster


def measure(cl, tokens, count: int) -> dict:
    (ua, ta), (ub, tb) = sorted(tokens.items())
    gates = cl.gates()
    a = Client(*gates[0]).connect()
    b = Client(*gates[-1]).connect()
    a.login(ua, token=ta)
    b.login(ub, token=tb)
    conv, acks, e2e = convs.dm(ua, ub), [], []
    for i in range(count):
        t0 = time.perf_counter()
        a.send(conv, {"i": i})
        t1 = time.perf_counter()
        b.expect("msg", timeout=10)
        t2 = time.perf_counter()
        acks.append((t1 - t0) * 1000)
        e2e.append((t2 - t0) * 1000)
    a.close()
    b.close()
    return {"messages": count, **_stats("ack", acks), **_stats("e2e", e2e)}


def _stats(name: str, values: list) -> dict:
    return {f"{name}_p50_ms": common.percentile(values, 50), f"{name}_p99_ms": common.percentile(values, 99),
            f"{name}_max_ms": max(values)}


def bench_rtt(args) -> int:
    count = args.size or 1000
    rows = [_with_cluster(args, lambda c, t: measure(c, t, count), 2,
                          extra={"gate": {"send_rate": 100000, "send_burst": 100000}})
            for _ in range(args.repeat)]
    print(common.table(rows, list(rows[0])))
    print("report:", common.write_report("rtt", rows, {"messages": count, "gates": args.gates,
                                                       "zones": args.zones}))
    return 0
