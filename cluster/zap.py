"""CURVE authentication of the bus, answered in the gevent hub.

Every node's inbox is a CURVE server; libzmq asks the context's ZAP handler
(``inproc://zeromq.zap.01``) about each client key. pyzmq's ``ThreadAuthenticator`` runs
that handler in a thread, which does not mix with gevent; ``HubAuthenticator`` is pyzmq's
own ``zmq.auth.Authenticator`` with its ZAP socket read from a libev watcher on the socket's
FD, in the hub, as the bus reads its inbox. The credentials callback (``KnownKeys``) allows
exactly the public keys of ``keys/public.yaml``.

A refused peer is counted (``Refusals``): libzmq reports every failed handshake on the
inbox's monitor socket — an unknown key (refused by ZAP) and a peer that speaks no CURVE
at all (a NULL mechanism, refused by libzmq before ZAP) alike. Each distinct refusal
reason is logged once; the count goes into the node's stats.
"""
from __future__ import annotations

import logging

import gevent
import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("zonechat.zap")

FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
DRAIN = 64          # ZAP requests / monitor events handled per wake-up before yielding
MAX_LOGGED = 64     # distinct refused keys logged by name; past it, counted only
SWEEP = 1.0         # seconds between two looks at a socket whatever its FD said


class KnownKeys:
    """The credentials provider: a client key is allowed iff it is a node's public key."""

    def __init__(self, public_keys):
        self.allowed = {bytes(k) for k in public_keys}
        self.unknown: set = set()

    def callback(self, domain, key: bytes) -> bool:
        if key in self.allowed:
            return True
        if len(self.unknown) < MAX_LOGGED and key not in self.unknown:
            self.unknown.add(key)
            log.warning("bus: refused a peer with unknown CURVE key %s", key.decode(errors="replace"))
        return False


class FdReader:
    """Call ``handle(socket)`` from the hub whenever ``sock`` may have input (ZMQ_FD is
    edge-triggered: ``handle`` reads until EAGAIN, or DRAIN items and reschedules). A
    timer also looks every SWEEP seconds: an edge consumed elsewhere (a send on the same
    socket, another reader of its state) must not leave input unread for good. Every
    reader's timer fires on the same phase of the loop's clock (a whole multiple of
    SWEEP), so a process's sweeps cost one wake-up a second, not one per socket."""

    def __init__(self, sock, handle):
        self.sock = sock
        self.handle = handle
        loop = gevent.get_hub().loop
        self.watcher = loop.io(sock.getsockopt(zmq.FD), 1)
        self.watcher.start(self._run)
        self.sweep = loop.timer(SWEEP - loop.now() % SWEEP, SWEEP)
        self.sweep.start(self._look)
        self.again = loop.run_callback(self._run)

    def _look(self) -> None:
        if self.again is None:          # else a drain is already scheduled
            self._run()

    def _run(self) -> None:
        self.again = None
        for _ in range(DRAIN):
            try:
                msg = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(msg)
        self.again = gevent.get_hub().loop.run_callback(self._run)

    def stop(self) -> None:
        self.watcher.stop()
        self.sweep.stop()
        if self.again is not None:
            self.again.stop()


class HubAuthenticator(zmq.auth.Authenticator):
    """pyzmq's Authenticator, its ZAP socket served in the hub (see the module docstring)."""

    def __init__(self, context, public_keys):
        super().__init__(context, log=log)
        self.keys = KnownKeys(public_keys)
        self.configure_curve_callback("*", self.keys)
        self._reader = None

    def start(self) -> None:
        super().start()
        self._reader = FdReader(self.zap_socket, self._handle)

    def _handle(self, msg) -> None:
        # handle_zap_message is a coroutine only to await async providers; ours is not,
        # so one send(None) runs it to the end
        coro = self.handle_zap_message(msg)
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        log.error("bus: ZAP handler did not complete synchronously")

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        super().stop()


class Refusals:
    """Count the failed handshakes of ``sock`` (a CURVE server) from its monitor socket."""

    def __init__(self, sock):
        self.count = 0
        self._reasons: set = set()
        self._monitor = sock.get_monitor_socket(FAILED)
        self._reader = FdReader(self._monitor, self._event)

    def _event(self, msg) -> None:
        try:
            event = parse_monitor_message(msg)
        except Exception:       # a short or foreign frame: nothing to count
            return
        if not event["event"] & FAILED:
            return
        self.count += 1
        reason = (event["event"], event["value"])
        if reason not in self._reasons and len(self._reasons) < MAX_LOGGED:
            self._reasons.add(reason)
            log.warning("bus: refused a peer (%s, code %s) from %s",
                        _event_name(event["event"]), event["value"], event["endpoint"].decode(errors="replace"))

    def close(self, sock) -> None:
        self._reader.stop()
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)


def _event_name(event: int) -> str:
    names = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
             zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "no CURVE / protocol error",
             zmq.EVENT_HANDSHAKE_FAILED_AUTH: "unknown key"}
    return names.get(event, str(event))
