"""Where the bench's clients connect from: spread over 127.0.0.2 and on.

A gate takes at most ``gate.max_connections_per_ip`` (1,000 by default, loopback included)
connections from one address, so a workload of thousands of clients on one machine
connects them from many loopback addresses (all of 127.0.0.0/8 reaches a gate bound to
127.0.0.1 on Linux), ``PER_ADDRESS`` each, as that many players behind their own
addresses would.
"""
from __future__ import annotations

import socket

from gevent import socket as gsocket

PER_ADDRESS = 500               # well under the default cap: churn and probes fit beside


def source(i: int, per_address: int = PER_ADDRESS) -> str:
    """The loopback address client number ``i`` connects from (127.0.0.1 is left alone)."""
    n = i // per_address
    return f"127.0.{n // 250}.{2 + n % 250}"


def connect(addr, i: int, timeout: float | None = None):
    """A gevent TCP connection to ``addr`` from ``source(i)``, TCP_NODELAY set."""
    sock = gsocket.create_connection(addr, timeout=timeout, source_address=(source(i), 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
