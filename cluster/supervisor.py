"""The supervisor behind ``zonechat up``: start, watch, restart and stop every process.

circus semantics, for one host's share of the config:

- start tier by tier in readiness order (START_ORDER); a tier starts only when every
  process of the tier before it is ready: its ``<role> <node> ready on <addr>`` line on
  stdout (the managed Redis: a PING answered) within ``ready_timeout``. A process that
  fails to get ready at startup aborts ``up`` (everything started is stopped, exit 1).
- every child (``cluster.child``) runs in its own process group, dies with the
  supervisor (PR_SET_PDEATHSIG) and logs to ``<data_dir>/logs/<node>.log``.
- a child that exits on its own is restarted after a backoff (RestartPolicy); more than
  ``restart_attempts`` restarts within ``restart_window`` seconds is ``flapping``: the
  next try waits ``retry_in`` seconds.
- stop (SIGTERM/SIGINT/SIGHUP to the supervisor): tiers in reverse order, each process
  SIGTERM, then SIGKILL after ``graceful_timeout``; a second signal SIGKILLs at once.
- the state file (see ``cluster.runstate``) says who runs where, for ``status``/``down``.
- the metrics port (cluster/metrics_http.py) serves this host's nodes' Prometheus metrics,
  ``/healthz`` and ``/readyz`` from before the first tier starts until the last one stopped.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass

import gevent
import gevent.pool
from gevent import subprocess
from gevent.event import Event

from cluster import redis_server, runstate, secrets
from cluster.child import Child
from cluster.metrics_http import MetricsHttp, MetricsHttpError

START_ORDER = ("redis", "dc", "log", "login", "zone", "center", "gate")
BACKOFF_BASE = 0.25        # seconds before the first restart; doubles per recent restart
BACKOFF_CAP = 8.0


class SupervisorError(Exception):
    """The cluster cannot be started as asked; the message says why and what to do."""


class RestartPolicy:
    """When to restart a child that exited: exponential backoff, then flapping (circus).

    ``plan(now)`` is called once per unexpected exit and answers ``(state, delay)``:
    ``("backoff", d)`` while at most ``attempts`` restarts fell within ``window`` seconds,
    else ``("flapping", retry_in)``, after which the count starts over.
    """

    def __init__(self, attempts: int, window: float, retry_in: float,
                 base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP):
        self.attempts = attempts
        self.window = window
        self.retry_in = retry_in
        self.base = base
        self.cap = cap
        self.recent: deque = deque()

    def plan(self, now: float) -> tuple[str, float]:
        while self.recent and self.recent[0] <= now - self.window:
            self.recent.popleft()
        if len(self.recent) >= self.attempts:
            self.recent.clear()
            self.recent.append(now + self.retry_in)
            return "flapping", float(self.retry_in)
        delay = min(self.cap, self.base * 2 ** len(self.recent))
        self.recent.append(now)
        return "backoff", delay


@dataclass(frozen=True)
class ProcSpec:
    """What to run for one node and how to tell it is ready."""
    name: str
    role: str
    argv: tuple
    ready_prefix: str | None = None         # a stdout line starting with this = ready
    probe: tuple | None = None              # (host, port, password): AUTH + PING = ready


def build_tiers(cfg, host: str | None = None, python: str = sys.executable) -> list[list[ProcSpec]]:
    """The processes this host runs, grouped by START_ORDER (empty tiers left out)."""
    tiers = []
    for role in START_ORDER:
        if role == "redis":
            tier = _redis_tier(cfg, host)
        else:
            tier = [_node_spec(cfg, n, python) for n in sorted(cfg.nodes_of(role), key=lambda n: n.name)
                    if host is None or n.host == host]
        if tier:
            tiers.append(tier)
    if not tiers:
        raise SupervisorError(f"no node of this config runs on host {host!r}")
    return tiers


def _redis_tier(cfg, host: str | None) -> list[ProcSpec]:
    rc = cfg.redis
    if not rc.managed or (host is not None and rc.host != host):
        return []
    probe = (rc.host, rc.port, secrets.redis_password(cfg, required=False))
    return [ProcSpec("redis", "redis", tuple(redis_server.command(cfg)), probe=probe)]


def _node_spec(cfg, node, python: str) -> ProcSpec:
    argv = (python, "-m", node.role, "--node", node.name, "-c", cfg.path)
    return ProcSpec(node.name, node.role, argv, ready_prefix=f"{node.role} {node.name} ready on ")


WILDCARDS = ("", "0.0.0.0", "::")


def address_lines(cfg, host: str | None = None) -> list[str]:
    """What a person needs once ``cluster ready`` is printed, one address a line: the chat
    page of every gate, the operator view, the gates' TCP addresses (this host's share)."""
    here = [n for n in cfg.nodes.values() if host is None or n.host == host]
    gates = sorted((n for n in here if n.role == "gate"), key=lambda n: n.name)
    lines = [f"  chat page  http://{_reachable(g.host)}:{g.ws_port}/  ({g.name})"
             for g in gates if g.ws_port]
    lines += [f"  ops page   http://{_reachable(c.admin_host)}:{c.admin_port}/ops  ({c.name})"
              for c in sorted(here, key=lambda n: n.name) if c.role == "center" and c.admin_port]
    lines += [f"  TCP        {_reachable(g.host)}:{g.tcp_port}  ({g.name})" for g in gates]
    return lines


def _reachable(bind_host: str) -> str:
    """A host a browser on this machine can open: loopback for a wildcard bind, IPv6 bracketed."""
    if bind_host in WILDCARDS:
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


class Supervisor:
    """Runs one host's processes until SIGTERM/SIGINT/SIGHUP; ``run()`` is the exit code."""

    def __init__(self, cfg, host: str | None = None, out=print):
        self.cfg = cfg
        self.host = host
        self.out = out
        self.conf = cfg.supervisor
        log_dir = os.path.join(cfg.data_dir, "logs")
        self.tiers = [[Child(spec, log_dir, self._policy()) for spec in tier]
                      for tier in build_tiers(cfg, host)]
        self.state_path = runstate.state_path(cfg.data_dir, host)
        self.state = "starting"
        self.started_at = time.time()
        self.stopping = Event()
        self.watchers = gevent.pool.Group()
        self.exit_code = 0
        self.http = MetricsHttp(self)

    def _policy(self) -> RestartPolicy:
        c = self.cfg.supervisor
        return RestartPolicy(c.restart_attempts, c.restart_window, c.retry_in)

    def children(self) -> list[Child]:
        return [c for tier in self.tiers for c in tier]

    def run(self) -> int:
        for sub in ("logs", "run", "redis"):
            os.makedirs(os.path.join(self.cfg.data_dir, sub), exist_ok=True)
        with runstate.exclusive(self.state_path):
            try:
                self.http.start()
            except MetricsHttpError as exc:
                raise SupervisorError(str(exc)) from None
            handlers = [gevent.signal_handler(s, self._on_signal)
                        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
            try:
                self._save()
                starter = gevent.spawn(self._start_all)
                starter.link_exception(self._crashed)
                self.stopping.wait()
                starter.join()
                self._stop_all()
            finally:
                for h in handlers:
                    h.cancel()
                self.http.stop()
                runstate.remove(self.state_path)
        return self.exit_code

    def _crashed(self, greenlet) -> None:
        """A bug in the supervisor itself: say so and stop, rather than run unsupervised."""
        self.out(f"supervisor error: {greenlet.exception!r}; stopping the cluster")
        self.exit_code = 1
        self.stopping.set()

    def _on_signal(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            return
        self.out("second signal: killing every process now")
        for child in self.children():
            if child.alive():
                child.signal(signal.SIGKILL)

    def _save(self) -> None:
        me = os.getpid()
        runstate.write(self.state_path, {
            "pid": me, "create_time": runstate.create_time(me), "started_at": self.started_at,
            "config": self.cfg.path, "host": self.host, "state": self.state,
            "nodes": {c.spec.name: c.entry() for c in self.children()}})

    # -- starting ---------------------------------------------------------------------
    def _start_all(self) -> None:
        for tier in self.tiers:
            if not self._start_tier(tier):
                if not self.stopping.is_set():
                    self.exit_code = 1
                    self.state = "failed"
                    self.out("cluster failed: see the node logs in " + os.path.join(self.cfg.data_dir, "logs"))
                self.stopping.set()
                return
        self.state = "ready"
        self._save()
        self.out("cluster ready")
        for line in address_lines(self.cfg, self.host):
            self.out(line)
        for child in self.children():
            self.watchers.spawn(self._keep_alive, child).link_exception(self._crashed)

    def _start_tier(self, tier: list[Child]) -> bool:
        for child in tier:
            if not self._spawn(child):
                return False
        deadline = time.monotonic() + self.conf.ready_timeout
        for child in tier:
            if not child.wait_ready(max(0.0, deadline - time.monotonic()), self.stopping):
                if not self.stopping.is_set():
                    self.out(self._not_ready(child))
                return False
            self._mark_running(child)
        return True

    def _spawn(self, child: Child) -> bool:
        if self.stopping.is_set():
            return False
        if child.spec.probe and redis_server.occupied(*child.spec.probe[:2]):
            self.out("{} cannot start: something already listens on {}:{}; stop it or change "
                     "redis.port".format(child.spec.name, *child.spec.probe[:2]))
            return False
        try:
            child.spawn()
        except (OSError, subprocess.SubprocessError) as exc:
            self.out(f"{child.spec.name} cannot start: {exc}")
            return False
        self._save()
        self.out(f"{child.spec.name} started (pid {child.pid})")
        return True

    def _not_ready(self, child: Child) -> str:
        code = child.popen.poll()
        if code is None:
            why = f"not ready after {self.conf.ready_timeout:g}s"
        else:
            why = f"exited with code {code} before it was ready"
        last = child.last_log_line()
        return f"{child.spec.name} {why}" + (f" ({last})" if last else "") + f"; see {child.log_path}"

    def _mark_running(self, child: Child) -> None:
        child.state = "running"
        self._save()
        self.out(f"{child.spec.name} ready (pid {child.pid})")

    # -- restarting -------------------------------------------------------------------
    def _keep_alive(self, child: Child) -> None:
        """child_watcher: restart ``child`` each time it exits, until the cluster stops."""
        while not self.stopping.is_set():
            gevent.wait([child.popen.result, self.stopping], count=1)
            if self.stopping.is_set():
                return
            state, delay = child.policy.plan(time.monotonic())
            child.state = state
            self._save()
            if state == "flapping":
                self.out(f"{child.spec.name} flapping: retry in {delay:g}s")
            else:
                self.out(f"{child.spec.name} exited with code {child.popen.returncode}; "
                         f"restart in {delay:g}s")
            if self.stopping.wait(delay):
                return
            self._restart(child)

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        if not self._spawn(child):
            return
        if child.wait_ready(self.conf.ready_timeout, self.stopping):
            self._mark_running(child)
        elif not self.stopping.is_set() and child.alive():
            self.out(self._not_ready(child) + "; stopping it")
            child.stop(self.conf.graceful_timeout)

    # -- stopping ---------------------------------------------------------------------
    def _stop_all(self) -> None:
        if self.state != "failed":
            self.state = "stopping"
        self._save()
        self.out("stopping")
        self.watchers.join(timeout=self.conf.graceful_timeout + 5)
        for tier in reversed(self.tiers):
            gevent.joinall([gevent.spawn(self._stop_child, c) for c in tier])
        self.out("cluster stopped")

    def _stop_child(self, child: Child) -> None:
        was_alive = child.alive()
        code = child.stop(self.conf.graceful_timeout)
        self._save()
        if was_alive:
            self.out(f"{child.spec.name} stopped (code {code})")
