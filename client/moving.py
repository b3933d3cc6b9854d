"""Where a client goes after ``kicked{moving}`` (docs/protocol.md §5). Pure: no I/O.

A draining gate names the cluster's other gates (``gates: [{tcp, ws}]``, "host:port") and a
``retry_ms`` hint. ``moving_plan`` turns that into the wait before the first attempt (a
random time within ``retry_ms``, so sessions kicked in one batch arrive spread out) and
the TCP addresses to try in turn: the named gates in random order (so the load spreads
over them), the draining gate last (it is back once restarted). ``client.Client`` follows
it in its reconnect worker.
"""
from __future__ import annotations

import random

MOVE_WAIT_MAX = 30.0            # seconds: the most a moving kick's retry_ms may ask
MOVE_WAIT_DEFAULT = 1.0         # seconds, when the kick carries no usable retry_ms


def parse_address(text) -> tuple[str, int] | None:
    """``"host:port"`` (``"[v6]:port"``) as (host, port); None if it is not one."""
    if not isinstance(text, str):
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def moving_plan(body: dict, current: tuple[str, int], rng=random) -> tuple[float, list[tuple[str, int]]]:
    """(seconds to wait, addresses to try in turn) after ``kicked{moving}``: the TCP
    addresses of its ``gates`` in random order, ``current`` (the draining gate) left out
    and put last, so it is tried only when none of the others lets us in."""
    gates = body.get("gates")
    found = [parse_address(g.get("tcp")) for g in gates if isinstance(g, dict)] if isinstance(gates, list) else []
    others = list(dict.fromkeys(a for a in found if a is not None and a != tuple(current)))
    rng.shuffle(others)
    retry_ms = body.get("retry_ms")
    if isinstance(retry_ms, bool) or not isinstance(retry_ms, (int, float)) or retry_ms < 0:
        wait_max = MOVE_WAIT_DEFAULT
    else:
        wait_max = min(retry_ms / 1000, MOVE_WAIT_MAX)
    return rng.uniform(0, wait_max), others + [tuple(current)]
