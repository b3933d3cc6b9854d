"""The ZeroMQ bus between nodes.

Every node binds one PULL socket (its inbox) and PUSHes to the inboxes of its peers.
An envelope is a typed record of ``cluster/envelopes.py``, on the wire a msgpack list
``[kind, ...]``; bodies inside it travel as opaque bytes.
Sends are batched: ``send`` queues an envelope and the queue of each peer goes out at the
end of the current loop tick as ONE ZeroMQ message, a msgpack array of the encoded
envelopes (zmq.green pays a hub switch per blocking call and libzmq real work per message
part, so one send or one part per envelope would cap a role at a few 10k msgs/s).

Authentication: every inbox is a CURVE server and every PUSH socket a CURVE client with
the node's own key pair (cluster/keys.py); the inbox admits exactly the public keys of
``keys/public.yaml`` (cluster/zap.py, answered in the hub), so a process that can reach a
bus port but holds no node's secret key cannot hand a node an envelope. A refused peer is
counted (``refused``) and logged.

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
import zmq as zmq_plain
import zmq.green as zmq

from cluster import envelopes, keys, zap
from cluster.codec import packb
from cluster.envelopes import Malformed, Rec, Recs
from cluster.links import Link

log = logging.getLogger("zonechat.bus")

RECV_BATCH = 64            # batches handled before yielding to other greenlets
LOG_FLUSH = 0.1            # seconds: records wait this long to travel in bigger batches


class Bus:
    def __init__(self, config, node_name: str, inline: bool = False, node_keys=None):
        self.config = config
        self.keys = node_keys or keys.load(config, node_name)
        self.inline = inline
        self.name = node_name
        self.hwm = config.bus.hwm
        self.ctx = zmq.Context.instance()
        self.handlers: dict = {}
        self.drops = 0
        self.log_drops = 0
        self._peers: dict = {}
        self._links: dict = {}          # peer -> Link (watch_links), for readiness
        self._watched: set = set()
        self._pending: dict = {}
        self._flush_scheduled = False
        self._flush_timer = None
        self._last_flush = 0.0
        self.window = config.bus.flush_window
        self._records: list = []
        self._records_timer = None
        self._inbox = None
        self._inbox_ctx = None
        self._auth = None
        self._refusals = None
        self._watcher = None
        self._drain_again = None
        self._log_node = next(iter(n.name for n in config.nodes_of("log")), None)
        self._log_max = config.log.queue_max
        self.raw_handler = None

    # -- wiring -----------------------------------------------------------------------
    def on(self, cls, handler) -> None:
        """Register ``handler(record)`` for envelopes of type ``cls`` (cluster/envelopes.py)."""
        self.handlers[cls.KIND] = (cls, handler)

    def on_raw(self, handler) -> None:
        """Give every batch to ``handler([raw_bytes, ...])``, its envelopes undecoded (the
        log role)."""
        self.raw_handler = handler

    def bind(self) -> str:
        """Bind the inbox. ``inline``: it is read by ``watch`` (a plain pyzmq socket in a
        context of its own, so no zmq.green watcher runs beside ours)."""
        spec = self.config.node(self.name)
        if self.inline:
            self._inbox_ctx = zmq_plain.Context(1)
        ctx = self._inbox_ctx or self.ctx
        self._auth = zap.HubAuthenticator(ctx, self.keys.peers.values())
        self._auth.start()                 # before the bind: no handshake goes unasked
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.curve_server = True
        self._refusals = zap.Refusals(sock)
        sock.bind(spec.bus_addr)
        self._inbox = sock
        return spec.bus_addr

    def _socket(self, peer: str):
        sock = self._peers.get(peer)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_serverkey = self.keys.peer(peer)
            if peer in self._watched:       # the monitor first: no handshake goes unseen
                self._links[peer] = Link(sock, peer)
            sock.connect(self.config.node(peer).bus_addr)
            self._peers[peer] = sock
        return sock

    def watch_links(self, peers) -> None:
        """Connect to ``peers`` now and follow whether each link is up (cluster/links.py).
        Called before anything is sent to them (Node.start does), else a handshake that
        came before the monitor would go unseen."""
        for peer in peers:
            if peer in self._peers and peer not in self._links:
                raise RuntimeError(f"watch_links({peer!r}) after a send to it")
            self._watched.add(peer)
            self._socket(peer)

    def linked(self, peer: str) -> bool:
        link = self._links.get(peer)
        return link is not None and link.up

    @property
    def queued(self) -> int:
        """Envelopes and log records waiting to leave (each bounded by ``hwm``)."""
        return sum(len(b) for b in self._pending.values()) + len(self._records)

    @property
    def refused(self) -> int:
        """Peers refused at the inbox's handshake (unknown key, or no CURVE at all)."""
        return self._refusals.count if self._refusals is not None else 0

    # -- sending ----------------------------------------------------------------------
    def send(self, peer: str, env) -> None:
        """Queue one envelope record for ``peer``."""
        self.send_packed(peer, envelopes.pack(env))

    def send_packed(self, peer: str, envelope: bytes) -> None:
        batch = self._pending.get(peer)
        if batch is None:
            batch = self._pending[peer] = []
        elif len(batch) >= self.hwm:
            self.drops += 1
            return
        batch.append(envelope)
        self._schedule()

    def record(self, kind: str, *fields) -> None:
        """Queue a traffic/audit record for the log role; never blocks, drops are counted.
        ``stats`` records travel alone (the log role reads their counters); the others
        go as one ``recs`` envelope per LOG_FLUSH, encoded once, in one piece."""
        if self._log_node is None:
            return
        if len(self._records) >= self._log_max:
            self.log_drops += 1
            return
        if kind == "stats":
            stats = Rec(int(time.time() * 1000), self.name, kind, fields[0])
            self._send_batch(self._log_node, [envelopes.pack(stats)])
            return
        self._records.append([int(time.time() * 1000), kind, *fields])
        if self._records_timer is None:
            self._records_timer = gevent.get_hub().loop.timer(LOG_FLUSH)
            self._records_timer.start(self.flush_records)

    def flush_records(self) -> None:
        """Records are not urgent: one batch per LOG_FLUSH keeps the log role's wake-ups
        (and this node's sends) few whatever the message rate."""
        self._records_timer = None
        records, self._records = self._records, []
        if records:
            self._send_batch(self._log_node, [envelopes.pack(Recs(len(records), self.name, records))])

    def _schedule(self) -> None:
        """Flush at the end of this tick, but at most once per ``window``: an idle node
        sends at once, a busy one sends fewer, larger batches."""
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        wait = self._last_flush + self.window - time.monotonic()
        loop = gevent.get_hub().loop
        if wait <= 0:
            loop.run_callback(self.flush)
        else:
            self._flush_timer = loop.timer(wait)
            self._flush_timer.start(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self._last_flush = time.monotonic()
        pending, self._pending = self._pending, {}
        for peer, batch in pending.items():
            self._send_batch(peer, batch)

    def _send_batch(self, peer: str, batch: list) -> None:
        try:
            self._socket(peer).send(packb(batch), flags=zmq.NOBLOCK, copy=True)
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
            self._dispatch((sock.recv(copy=True),))
            for _ in range(RECV_BATCH):
                try:
                    frame = sock.recv(flags=zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._dispatch((frame,))
            gevent.sleep(0)

    def watch(self) -> None:
        """Read the inbox from a libev watcher on its ZMQ_FD and run the handlers in the
        hub, without a greenlet switch per batch: for roles whose handlers never block
        (gate, zone, center). The FD only signals after a receive met EAGAIN, so a drain
        that stops at ``RECV_BATCH`` schedules the next one itself."""
        loop = gevent.get_hub().loop
        self._watcher = loop.io(self._inbox.getsockopt(zmq.FD), 1)
        self._watcher.start(self._drain)
        self._drain_again = loop.run_callback(self._drain)

    def unwatch(self) -> None:
        """Stop reading the inbox (``watch``); what is queued in it stays unread."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._drain_again is not None:
            self._drain_again.stop()
            self._drain_again = None

    def _drain(self) -> None:
        self._drain_again = None
        sock = self._inbox
        for _ in range(RECV_BATCH):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch((frame,))
        self._drain_again = gevent.get_hub().loop.run_callback(self._drain)

    def _dispatch(self, frames) -> None:
        for frame in frames:
            try:
                batch = msgpack.unpackb(frame, raw=False)
            except (ValueError, msgpack.UnpackException):
                log.warning("dropping a malformed batch on %s", self.name)
                continue
            if self.raw_handler is not None:
                self.raw_handler(batch)
            else:
                self._handle(batch)

    def _handle(self, batch) -> None:
        handlers = self.handlers
        for raw in batch:
            try:
                env = msgpack.unpackb(raw, raw=False, strict_map_key=False)
                cls, handler = handlers[env[0]]
                record = envelopes.decode(cls, env)
            except (ValueError, msgpack.UnpackException, KeyError, IndexError, TypeError, Malformed):
                log.warning("dropping a malformed or unknown envelope on %s", self.name)
                continue
            try:
                handler(record)
            except Exception:  # one bad envelope must not stop the inbox
                log.exception("handler for %r failed on %s", cls.KIND, self.name)

    def close(self) -> None:
        if self._records_timer is not None:
            self._records_timer.stop()
        self.flush_records()
        self.flush()
        for link in self._links.values():
            link.close()
        for sock in self._peers.values():
            sock.close()
        self.unwatch()
        if self._refusals is not None:
            self._refusals.close(self._inbox)
        if self._inbox is not None:
            self._inbox.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._inbox_ctx is not None:
            self._inbox_ctx.term()
