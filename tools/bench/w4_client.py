"""One W4 generator process: hold N logged-in idle sessions to one gate, user i from
``tools.bench.sources.source(i)`` (a gate takes 1,000 connections per address).

python -m tools.bench.w4_client CONFIG HOST PORT FIRST COUNT [PING_EVERY]
Prints ``ready <logged_in> <failed>`` once every login is answered, pings each session
every PING_EVERY seconds (default 20, staggered; 0: never),
and exits when its stdin closes (the parent holds it open while it measures).
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import random
import sys

import gevent
from gevent import socket as gsocket
from gevent.pool import Pool

from cluster import config as config_mod, tokens
from cluster.codec import encode_frame
from tools.bench.common import login_lean
from tools.bench.sources import source

PING_EVERY = 20.0


def open_session(cfg, addr, i, name, attempts: int = 40):
    """Connect and log in; a connection the gate closed (its 10 s log-in deadline passed
    while login was busy) is opened again, as a game client would."""
    token = tokens.mint(tokens.key_of(cfg), name, 0, 86400)[0]
    for attempt in range(attempts):
        sock = gsocket.socket()
        try:
            sock.bind((source(i), 0))
            sock.connect(addr)
            login_lean(sock, name, token, tries=15)
            return sock
        except OSError:
            sock.close()
            if attempt == attempts - 1:
                raise
            gevent.sleep(1.0 + random.random() * 2.0)
    raise ConnectionError(f"{name}: no session")


def main(argv) -> int:
    path, host, port, first, count, *rest = argv
    every = float(rest[0]) if rest else PING_EVERY
    cfg = config_mod.load(path)
    first, count, addr = int(first), int(count), (host, int(port))
    socks, failed = [], 0

    def one(i):
        nonlocal failed
        try:
            socks.append(open_session(cfg, addr, i, f"b{i:06d}"))
        except OSError:
            failed += 1
    Pool(500).map(one, range(first, first + count))
    print(f"ready {len(socks)} {failed}", flush=True)
    ping = encode_frame({"t": "ping"})

    def pinger():
        """Each session every ``every`` s, spread evenly over the period (as clients are)."""
        while True:
            gap = every / max(1, len(socks))
            for s in list(socks):
                gevent.sleep(gap)
                try:
                    s.sendall(ping)
                except OSError:
                    pass
    if every > 0:
        gevent.spawn(pinger)
    gevent.get_hub().threadpool.apply(sys.stdin.read)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
