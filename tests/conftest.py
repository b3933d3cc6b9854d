"""Shared fixtures: a whole zonechat cluster on free ports, run by the real supervisor.

    def test_something(cluster):            # module-scoped, started once per test module
        host, port = cluster.gates[0]        # gate TCP addresses, in node-name order
        old = cluster.kill("zone1")          # SIGKILL; the supervisor restarts it
        cluster.wait_ready("zone1", old_pid=old)

    def test_custom(start_cluster):          # a cluster of its own, with config overrides
        c = start_cluster({"supervisor": {"graceful_timeout": 1}})

Every cluster is torn down at the end of its scope, whatever the tests did: ``zonechat
down``, then SIGKILL of any pid it ever saw still running.

With ``ZONECHAT_TEST_REDIS=cluster`` (``make test-slow`` sets it for the DM, group and
room suites) every cluster whose overrides name no ``redis`` section runs on a real Redis
Cluster of its own (tools/redis_cluster.py: Debian's Redis 7, 3 masters + 3 replicas),
stopped after it.
"""
from __future__ import annotations

import os

import pytest

from harness import RunningCluster, make_config, missing
from tools.redis_cluster import RedisClusterProcs, binaries

REDIS_MODE = os.environ.get("ZONECHAT_TEST_REDIS", "single")


def on_redis_cluster(directory: str, overrides: dict | None, backends: list) -> dict | None:
    """``overrides`` with a fresh Redis Cluster when this run wants one."""
    if REDIS_MODE != "cluster" or (overrides and "redis" in overrides):
        return overrides
    if binaries() is None:
        missing("Debian's redis-server 7 is not installed (apt-get install redis-server)")
    procs = RedisClusterProcs(os.path.join(directory, "rcluster"))
    backends.append(procs.start())
    return {**(overrides or {}), "redis": {"managed": False, "mode": "cluster", "nodes": procs.seeds,
                                          "url": procs.url}}


@pytest.fixture(scope="module")
def start_cluster(tmp_path_factory):
    """Factory: ``start_cluster(overrides=None, detach=False)`` -> a started RunningCluster; all are
    torn down when the module's tests are done."""
    started, backends = [], []

    def start(overrides: dict | None = None, detach: bool = False) -> RunningCluster:
        directory = str(tmp_path_factory.mktemp("cluster"))
        overrides = on_redis_cluster(directory, overrides, backends)
        running = RunningCluster(make_config(directory, overrides))
        started.append(running)
        return running.start(detach=detach)

    yield start
    failures = []
    for running in started:
        try:
            running.stop()
        except Exception as exc:  # stop the others anyway, then report
            failures.append(exc)
    for procs in backends:
        procs.stop()
    if failures:
        raise failures[0]


@pytest.fixture(scope="module")
def cluster(start_cluster) -> RunningCluster:
    """The default test cluster: 2 gates, login, center, 2 zones, dc, log, managed Redis."""
    return start_cluster()
