"""The CPU of an idle cluster: no clients at all, then ``--sessions`` idle logged-in ones.

python -m tools.bench idle [--sessions 10000] [--seconds 20] [--topology default|1+1]

Each run starts a fresh pinned cluster, waits ``--settle`` seconds after it is ready, and
reads the busy CPU of every cluster process (supervisor and Redis included) over
``--seconds``; then it logs the sessions in, spread over the gates by W4's generator
processes (each session pings every ``--ping-every`` s, 20 by default, staggered, as clients do), waits ``--settle``
after the last login and measures again. Prints per-run tables with the busiest
processes, then medians.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from tools.bench import common
from tools.bench.runner import _with_cluster
from tools.bench.workloads import topologies

COLS = ["topology", "sessions", "held", "seconds", "server_busy", "top"]


def measure(cl, seconds: float) -> dict:
    meter = common.CpuMeter(cl)
    time.sleep(seconds)                 # the measurement itself: nothing is waited for
    cpu = meter.read()
    return {"seconds": cpu["wall"], "server_busy": cpu["server_busy"],
            "top": common.top_processes(cpu["per_process"]), "per_process": cpu["per_process"]}


def hold_sessions(cl, total: int, ping_every: float = 20.0) -> tuple[list, int]:
    """W4 generator processes holding ``total`` sessions over the gates; (procs, held)."""
    gates = sorted(cl.cfg.nodes_of("gate"), key=lambda n: n.name)
    per_gate, procs, first = -(-total // len(gates)), [], 0
    for g in gates:
        n = min(per_gate, total - first)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tools.bench.w4_client", cl.config_path, g.host,
             str(g.tcp_port), str(first), str(n), str(ping_every)],
            cwd=common.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))      # on the load core: pinned as this process is
        first += n
    held = 0
    for p in procs:                     # "ready <held> <failed>" once every login is answered
        words = p.stdout.readline().split()
        held += int(words[1]) if len(words) == 3 else 0
    return procs, held


def release(procs: list) -> None:
    for p in procs:
        if p.stdin:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def idle_run(cl, label: str, sessions: int, seconds: float, settle: float,
             ping_every: float) -> list[dict]:
    time.sleep(settle)                  # past start-up work (the cluster is ready already)
    rows = [{"topology": label, "sessions": 0, "held": 0, **measure(cl, seconds)}]
    if sessions:
        procs, held = hold_sessions(cl, sessions, ping_every)
        try:
            time.sleep(settle)
            rows.append({"topology": label, "sessions": sessions, "held": held, **measure(cl, seconds)})
        finally:
            release(procs)
    return rows


def bench_idle(args) -> int:
    runs: dict = {}
    summary = []
    for rep in range(args.repeat):
        for label, gates, zones in topologies(args):
            one = argparse.Namespace(**{**vars(args), "gates": gates, "zones": zones})
            rows = _with_cluster(one, lambda c, t: idle_run(c, label, args.sessions, args.seconds,
                                                            args.settle, args.ping_every),
                                 args.sessions)
            print(f"\nidle {label} ({gates} gate(s), {zones} zone(s)) run {rep + 1}/{args.repeat}")
            print(common.table(rows, COLS))
            for row in rows:
                runs.setdefault((label, row["sessions"]), []).append(row)
            summary.extend(dict(r, run=rep) for r in rows)
    print("\nidle: medians over runs (server_busy: cores of the whole cluster)")
    medians = [{"topology": label, "sessions": n, "runs": len(rows),
                "held": statistics.median(r["held"] for r in rows),
                "server_busy": statistics.median(r["server_busy"] for r in rows)}
               for (label, n), rows in runs.items()]
    print(common.table(medians, ["topology", "sessions", "runs", "held", "server_busy"]))
    print("report:", common.write_report("idle", summary, {k: v for k, v in vars(args).items()
                                                           if k != "rates"}))
    return 0
