"""Counters for the operator view: every gate, zone and dc tells center once a second.

One ``Stats`` envelope (cluster/envelopes.py) per node per second, queued on
the bus like any other envelope (it leaves in the next batch to center, so it costs no
extra ZeroMQ message under load). ``counters`` is a small map of cumulative numbers and
current sizes, plus ``t`` (the node's clock, seconds): center computes per-second rates
from two successive reports (``center/ops.py``), and ``proc``: the process's CPU seconds
(user + system), resident memory and open files (counted every 10 s) now, its start time and how many times
the supervisor restarted this node (``$ZONECHAT_RESTARTS``, set by cluster/child.py).
"""
from __future__ import annotations

import os
import time

import psutil

from cluster.envelopes import Stats

STATS_EVERY = 1.0            # seconds between two reports of one node
FDS_EVERY = 10.0             # seconds between two counts of the open files


def report_loop(node, counters, every: float = STATS_EVERY) -> None:
    """Run as an owned greenlet: send ``counters()`` to center every ``every`` seconds.
    A failing ``counters`` skips that report (logged): the view never stops a node."""
    center = node.config.nodes_of("center")[0].name
    proc = Proc()
    while not node.stopped.wait(every):
        try:
            body = counters()
            body["proc"] = proc.sample()
        except Exception:
            node.log.exception("stats report of %s failed", node.name)
            continue
        body["t"] = time.time()
        node.bus.send(center, Stats(node.name, node.role, body))


def bus_counters(bus) -> dict:
    """What every role's bus lost (envelopes to peers, records to the log role) and the
    peers its inbox refused."""
    return {"bus_drops": bus.drops, "log_drops": bus.log_drops, "bus_refused": bus.refused}


class Proc:
    """This process's CPU, memory and open files, for the ``proc`` field of a report: read
    straight from the kernel (``os.times``, ``/proc/self/statm``, ``/proc/self/fd``), a
    few tens of microseconds a second, psutil (several times that, most of an idle node's
    work in a profile) only where there is no /proc."""

    def __init__(self):
        self.process = psutil.Process()
        self.started_at = self.process.create_time()
        self.restarts = int(os.environ.get("ZONECHAT_RESTARTS", "0") or 0)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.fds, self.fds_at = None, 0.0

    def sample(self) -> dict:
        cpu = os.times()
        try:
            with open("/proc/self/statm", "rb") as fh:
                rss = int(fh.read().split()[1]) * self.page
        except OSError:
            rss = self.process.memory_info().rss
        return {"cpu_s": round(cpu.user + cpu.system, 3), "rss": rss, "fds": self.open_files(),
                "started_at": self.started_at, "restarts": self.restarts}

    def open_files(self) -> int:
        """Open files, counted at most once per FDS_EVERY: listing /proc/self/fd costs
        ~0.2 µs per descriptor, a tenth of an idle gate's work with 5,000 sessions."""
        now = time.monotonic()
        if self.fds is None or now - self.fds_at >= FDS_EVERY:
            try:
                self.fds = len(os.listdir("/proc/self/fd")) - 1        # less the listing's own
            except OSError:
                self.fds = self.process.num_fds()
            self.fds_at = now
        return self.fds
