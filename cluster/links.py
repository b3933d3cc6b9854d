"""Is a node linked to a peer right now? From the ZeroMQ monitor of its PUSH socket.

libzmq reports a connection's life on a socket's monitor: ``HANDSHAKE_SUCCEEDED`` once
the CURVE handshake with the peer's inbox went through (the peer runs and knows our key),
``DISCONNECTED`` when the TCP connection ends, a failed handshake when the peer refused
us. ``Link.up`` follows those events, read in the hub like the inbox's refusals
(cluster/zap.py), so readiness checks ("a gate has center and its zones") cost nothing
per message and see a dead peer as soon as its connection drops.
"""
from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import parse_monitor_message

from cluster.zap import FAILED, FdReader

UP = zmq.EVENT_HANDSHAKE_SUCCEEDED
DOWN = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | FAILED
log = logging.getLogger("zonechat.links")


class Link:
    def __init__(self, sock, peer: str = ""):
        self.up = False
        self.peer = peer
        self._sock = sock
        self._monitor = sock.get_monitor_socket(UP | DOWN)
        self._reader = FdReader(self._monitor, self._event)

    def _event(self, msg) -> None:
        try:
            event = parse_monitor_message(msg)["event"]
        except Exception:       # a short or foreign frame: no change
            return
        up = bool(event & UP) or (self.up and not event & DOWN)
        if up != self.up:
            log.info("bus link to %s %s", self.peer, "up" if up else "down")
        self.up = up

    def close(self) -> None:
        self._reader.stop()
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
