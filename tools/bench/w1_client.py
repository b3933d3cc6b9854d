"""One W1 generator subprocess: receivers FIRST..FIRST+COUNT-1 of the bench room, for
members past what one process may hold (20,000 open files a process; w1_room.split).

python -m tools.bench.w1_client CONFIG FIRST COUNT SENDERS PASSIVE LIFETIME
User i is ``b{i:06d}`` on gate i mod gates, from ``sources.source(i)``; receiver number
i - SENDERS joins passive by ``w1_room.is_passive(j, PASSIVE)``. Prints ``ready <stats>``
(JSON, w1_room.STAT_KEYS) once every login is answered, or ``failed <why>`` and exits 1;
then answers each ``s`` line on stdin with one line of stats. Exits when stdin closes,
or LIFETIME seconds after it started, whichever comes first.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import json
import os
import sys
import time

import gevent

from cluster import config as config_mod, tokens
from tools.bench import w1_room
from tools.bench.common import pin_generator


def main(argv) -> int:
    path, first, count, senders, passive, lifetime = argv
    first, count, senders = int(first), int(count), int(senders)
    passive, lifetime = float(passive), float(lifetime)
    deadline = time.monotonic() + lifetime
    cfg = config_mod.load(path)
    pin_generator()
    gates = [(n.host, n.tcp_port) for n in sorted(cfg.nodes_of("gate"), key=lambda n: n.name)]
    key = tokens.key_of(cfg)
    specs = []
    for i in range(first, first + count):
        name = f"b{i:06d}"
        specs.append((gates[i % len(gates)], name, tokens.mint(key, name, 0, 86400)[0], i))
    try:
        receivers = w1_room.connect_receivers(specs, senders, passive, cfg.chat.passive_window,
                                              cfg.chat.passive_recent)
    except Exception as exc:             # noqa: BLE001  (reported to the parent, which stops)
        print("failed", f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300], flush=True)
        return 1
    group = w1_room.LocalGroup(receivers)
    print("ready", json.dumps(group.stats()), flush=True)
    greenlets = [gevent.spawn(r.run) for r in receivers]
    greenlets.append(gevent.spawn(w1_room.pinger, receivers, 20.0, deadline))
    pool = gevent.get_hub().threadpool
    with gevent.Timeout(max(1.0, deadline - time.monotonic()), False):
        while True:
            line = pool.apply(sys.stdin.readline)
            if not line:
                break
            if line.strip() == "s":
                print(json.dumps(group.stats()), flush=True)
    gevent.killall(greenlets, block=False)
    group.close()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)                       # a thread may still sit in stdin's readline
