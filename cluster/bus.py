"""The ZeroMQ bus between nodes.

Every node binds one PULL socket (its inbox) and PUSHes to the inboxes of its peers.
An envelope is a msgpack list ``[kind, ...]``; bodies inside it travel as opaque bytes.
Sends are batched: ``send`` queues an envelope and the queue of each peer goes out as
one multipart message at the end of the current loop tick (zmq.green pays a hub switch
per blocking call, so one send per message would cap a role at a few 10k msgs/s).

Bounds: each peer's pending batch holds at most ``hwm`` envelopes and each socket has
the same ZeroMQ high-water mark. Past either bound the envelope is dropped and counted
(``drops``): chat requests then time out at the gate as ``unavailable`` (nothing was
stored), log records are counted as lost by the log role's stats.
"""
from __future__ import annotations

import logging
import time

import gevent
import msgpack
import zmq.green as zmq

from cluster.codec import packb

log = logging.getLogger("zonechat.bus")

RECV_BATCH = 1000          # envelopes handled before yielding to other greenlets
LOG_KIND = "rec"


class Bus:
    def __init__(self, config, node_name: str):
        self.config = config
        self.name = node_name
        self.hwm = config.bus.hwm
        self.ctx = zmq.Context.instance()
        self.handlers: dict = {}
        self.drops = 0
        self.log_drops = 0
        self._peers: dict = {}
        self._pending: dict = {}
        self._flush_scheduled = False
        self._inbox = None
        self._log_node = next(iter(n.name for n in config.nodes_of("log")), None)
        self._log_max = config.log.queue_max

    # -- wiring -----------------------------------------------------------------------
    def on(self, kind: str, handler) -> None:
        """Register ``handler(env)`` for envelopes whose first element is ``kind``."""
        self.handlers[kind] = handler

    def bind(self) -> str:
        spec = self.config.node(self.name)
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(spec.bus_addr)
        self._inbox = sock
        return spec.bus_addr

    def _socket(self, peer: str):
        sock = self._peers.get(peer)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(self.config.node(peer).bus_addr)
            self._peers[peer] = sock
        return sock

    # -- sending ----------------------------------------------------------------------
    def send(self, peer: str, *fields) -> None:
        self.send_packed(peer, packb(list(fields)))

    def send_packed(self, peer: str, envelope: bytes) -> None:
        batch = self._pending.get(peer)
        if batch is None:
            batch = self._pending[peer] = []
        elif len(batch) >= self.hwm:
            self.drops += 1
            return
        batch.append(envelope)
        self._schedule()

    def record(self, *fields) -> None:
        """Queue a traffic/audit record for the log role; never blocks, drops are counted."""
        if self._log_node is None:
            return
        batch = self._pending.get(self._log_node)
        if batch is not None and len(batch) >= self._log_max:
            self.log_drops += 1
            return
        self.send_packed(self._log_node, packb([LOG_KIND, int(time.time() * 1000), self.name, *fields]))

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            gevent.get_hub().loop.run_callback(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for peer, batch in pending.items():
            try:
                self._socket(peer).send_multipart(batch, flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                if peer == self._log_node:
                    self.log_drops += len(batch)
                else:
                    self.drops += len(batch)
                    log.warning("bus to %s is full: dropped %d envelopes", peer, len(batch))

    # -- receiving --------------------------------------------------------------------
    def serve(self) -> None:
        """The inbox_listener: receive batches and dispatch each envelope."""
        sock = self._inbox
        while True:
            frames = sock.recv_multipart(copy=True)
            self._dispatch(frames)
            handled = len(frames)
            while handled < RECV_BATCH:
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._dispatch(frames)
                handled += len(frames)
            gevent.sleep(0)

    def _dispatch(self, frames) -> None:
        handlers = self.handlers
        for raw in frames:
            try:
                env = msgpack.unpackb(raw, raw=False, strict_map_key=False)
                handler = handlers[env[0]]
            except (ValueError, msgpack.UnpackException, KeyError, IndexError, TypeError):
                log.warning("dropping a malformed or unknown envelope on %s", self.name)
                continue
            try:
                handler(env)
            except Exception:  # one bad envelope must not stop the inbox
                log.exception("handler for %r failed on %s", env[0], self.name)

    def close(self) -> None:
        self.flush()
        for sock in self._peers.values():
            sock.close()
        if self._inbox is not None:
            self._inbox.close(linger=0)
