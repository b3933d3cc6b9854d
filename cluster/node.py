"""Node lifecycle shared by every role: args, config, logging, bus, owned greenlets, signals.

A role process prints one stable line when it can serve, which the supervisor and the
tests wait for::

    gate gate1 ready on 127.0.0.1:7700

SIGTERM or SIGINT stops it gracefully (``Node.stop``); a crash of any owned greenlet is
logged and ends the process with exit code 1, so the supervisor restarts it.
"""
from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys

import gevent
from gevent.event import Event
from gevent.pool import Group

from cluster import config as config_mod
from cluster.bus import Bus
from cluster.envelopes import Rep
from cluster.keys import KeyFileError
from cluster.metrics import MetricsServer, bus_families
from cluster.secrets import SecretError

# Cyclic GC: young collections every 10,000 net allocations instead of 700 (a hot role
# allocates per message and frees nearly all of it by refcount; a native profile of a
# gate at 6,000 DMs/s put ~5% of it in the collector), and what setup built is frozen
# out of every later collection.
GC_THRESHOLDS = (10000, 20, 20)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Node:
    """Base of every role: owns a bus, a group of linked greenlets and the stop event."""

    role = "node"
    inline_inbox = False    # True: handlers never block, so they run in the hub (Bus.watch)

    def __init__(self, config, spec):
        self.config = config
        self.spec = spec
        self.name = spec.name
        self.log = logging.getLogger(f"zonechat.{self.role}.{self.name}")
        self.bus = Bus(config, spec.name, inline=self.inline_inbox)
        self.greenlets = Group()
        self.stopped = Event()
        self.exit_code = 0
        self.metrics_server = MetricsServer(self)

    # roles override these
    def setup(self) -> str:
        """Bind sockets and register bus handlers; return the address to print as ready."""
        return self.bus.bind()

    def shutdown(self) -> None:
        """Release role resources after the greenlets stopped."""

    def metrics(self, fam) -> None:
        """Add this node's Prometheus families to ``fam`` (cluster/metrics.py Families)."""
        bus_families(fam, self.bus)

    def ready_checks(self) -> dict:
        """{check: bool}: the node can do its job when all are true (``/readyz``)."""
        return {}

    def watched_peers(self) -> list[str]:
        """Peers whose bus link ``ready_checks`` looks at (cluster/links.py)."""
        return []

    def answer(self, to: str, req: int, body: bytes) -> None:
        """Answer request ``req`` of node ``to`` with an encoded body (cluster/replies.py)."""
        self.bus.send(to, Rep(req, body))

    def spawn(self, fn, *args, name: str | None = None):
        g = self.greenlets.spawn(fn, *args)
        g.name = name or getattr(fn, "__name__", "greenlet")
        g.link_exception(self._crashed)
        return g

    def _crashed(self, g) -> None:
        if self.stopped.is_set():
            return
        self.log.error("greenlet %s crashed: %r", g.name, g.exception, exc_info=g.exc_info)
        self.exit_code = 1
        self.stopped.set()

    def start(self) -> str:
        self.bus.watch_links(self.watched_peers())
        addr = self.setup()
        try:
            self.metrics_server.start()
        except OSError as exc:          # chat goes on; the node shows as unreachable in /readyz
            self.log.error("metrics socket not served: %s", exc)
        if self.inline_inbox:
            self.bus.watch()
        else:
            self.spawn(self.bus.serve, name="inbox_listener")
        return addr

    def stop(self) -> None:
        self.stopped.set()

    def run_until_stopped(self) -> int:
        self.stopped.wait()
        self.log.info("%s %s stopping", self.role, self.name)
        self.metrics_server.close()
        try:
            self.shutdown()
        finally:
            self.greenlets.kill(timeout=2)
            self.bus.close()
        self.log.info("%s %s stopped", self.role, self.name)
        return self.exit_code


def parse_args(role: str, argv=None):
    parser = argparse.ArgumentParser(prog=f"python -m {role}", description=f"run one zonechat {role} node")
    parser.add_argument("--node", required=True, help="node name from the config's nodes section")
    parser.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    return parser.parse_args(argv)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def main(role: str, factory, argv=None) -> None:
    """Entry point of ``python -m <role>``."""
    args = parse_args(role, argv)
    setup_logging()
    try:
        cfg = config_mod.load(args.config)
        spec = cfg.node(args.node)
    except config_mod.ConfigError as exc:
        print(f"{role}: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    if spec.role != role:
        print(f"{role}: node {spec.name} has role {spec.role}, not {role}", file=sys.stderr)
        sys.exit(2)
    try:
        node = factory(cfg, spec)
    except (KeyFileError, SecretError) as exc:
        print(f"{role}: {exc}", file=sys.stderr)
        sys.exit(2)
    addr = node.start()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, node.stop)
    node.log.info("%s %s ready on %s", role, spec.name, addr)
    print(f"{role} {spec.name} ready on {addr}", flush=True)
    sys.exit(node.run_until_stopped())
