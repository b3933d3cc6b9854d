"""Counters for the operator view: every gate, zone and dc tells center once a second.

One ``Stats`` envelope (cluster/envelopes.py) per node per second, queued on
the bus like any other envelope (it leaves in the next batch to center, so it costs no
extra ZeroMQ message under load). ``counters`` is a small map of cumulative numbers and
current sizes, plus ``t`` (the node's clock, seconds): center computes per-second rates
from two successive reports (``center/ops.py``).
"""
from __future__ import annotations

import time

from cluster.envelopes import Stats

STATS_EVERY = 1.0            # seconds between two reports of one node


def report_loop(node, counters, every: float = STATS_EVERY) -> None:
    """Run as an owned greenlet: send ``counters()`` to center every ``every`` seconds.
    A failing ``counters`` skips that report (logged): the view never stops a node."""
    center = node.config.nodes_of("center")[0].name
    while not node.stopped.wait(every):
        try:
            body = counters()
        except Exception:
            node.log.exception("stats report of %s failed", node.name)
            continue
        body["t"] = time.time()
        node.bus.send(center, Stats(node.name, node.role, body))


def bus_counters(bus) -> dict:
    """What every role's bus lost (envelopes to peers, records to the log role) and the
    peers its inbox refused."""
    return {"bus_drops": bus.drops, "log_drops": bus.log_drops, "bus_refused": bus.refused}
