"""Running one workload against a fresh pinned cluster, and summarising repeats."""
from __future__ import annotations

import os
import statistics
import tempfile

from tools.bench import common


def _print_median(name: str, size: int, caps: list, args=None, unit: str = "deliveries/s") -> None:
    got = [c for c in caps if c]
    if args is not None:
        store = ", Redis Cluster 3+3" if getattr(args, "redis_cluster", False) else ""
        if getattr(args, "min_replicas", None) is not None:
            store += f", min_replicas_acked {args.min_replicas}"
        name = f"{name} [{args.gates} gate(s), {args.zones} zone(s){store}]"
    if not got:
        print(f"{name} size={size}: no passing step")
        return
    med = statistics.median(c["deliveries_s"] for c in got)
    core = statistics.median(c["per_core_s"] for c in got)
    busy = statistics.median(c["server_busy"] for c in got)
    print(f"{name} size={size}: median capacity {med:,.0f} {unit}, "
          f"{core:,.0f} per busy server-core-second, cluster core busy {busy:.0%} "
          f"({len(got)}/{len(caps)} runs passed)")


def _with_cluster(args, fn, users: int, extra: dict | None = None):
    """``fn(cluster, tokens)`` on a fresh pinned cluster; with ``--redis-cluster`` its store
    is a Redis Cluster of 3 masters + 3 replicas (tools/redis_cluster.py) on the server core."""
    with tempfile.TemporaryDirectory(prefix="zcbench-") as tmp:
        backend = None
        if getattr(args, "redis_cluster", False):
            from tools.redis_cluster import RedisClusterProcs
            backend = RedisClusterProcs(os.path.join(tmp, "rcluster"), cores={common.SERVER_CORE}).start()
            extra = {**(extra or {}), "redis": {"managed": False, "mode": "cluster",
                                                "nodes": backend.seeds, "url": backend.url}}
        if getattr(args, "min_replicas", None) is not None:
            extra = {**(extra or {}), "redis": {**(extra or {}).get("redis", {}),
                                                "min_replicas_acked": args.min_replicas}}
        try:
            config = common.bench_config(tmp, gates=args.gates, zones=args.zones, extra=extra)
            cl = common.BenchCluster(config).start()
            if backend is not None:
                cl.extra_pids = {f"redis-{port}": proc.pid for port, proc in backend.procs.items()}
            try:
                tokens = common.provision(cl.cfg, [f"b{i:06d}" for i in range(users)])
                common.pin_generator()
                return fn(cl, tokens)
            finally:
                cl.stop()
        finally:
            if backend is not None:
                backend.stop()
