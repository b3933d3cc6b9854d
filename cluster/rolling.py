"""``zonechat drain`` and ``zonechat restart --rolling``: restarts nobody notices at once.

``drain GATE [--over 30s]`` asks center's admin API (``POST /v1/drain``) to drain a gate:
it stops accepting, moves its sessions to the other gates with ``kicked{moving}`` spread
evenly over ``--over`` seconds (default ``gate.drain_over``), then exits, and its
supervisor starts it afresh (gate/drain.py).

``restart --rolling [ROLE]`` restarts one host's share of the cluster (``--host``), or of
one role, one node at a time, each back and ready before the next goes:

1. the gates first, each drained as above (its clients move to the others and come back
   at the drain's pace, not in one storm); once a gate is back, the run waits the drain's
   ``retry_ms`` (the longest a moved client waits before reconnecting, 0.5 s) so those
   clients have landed before the next gate drains: else it would bounce the ones still
   on their way, and their arrivals would add to its own pace;
2. then the other roles in start order (dc, log, login, zone, center): SIGTERM to the
   node's pid, the supervisor restarts it. The pid comes from the supervisor's state file
   (cluster/runstate.py) and is signalled only while its process start time still matches
   the one recorded there: a recycled pid is never signalled.

A node is back when the state file shows a new pid running and the supervisor's readiness
endpoint (``GET /readyz?node=NAME`` on ``metrics.host:metrics.port``) answers 200. A
supervisor that serves no such endpoint (one started before it existed) is told apart by
a refused connection: the state file alone is trusted then, and the command says so.
The managed Redis is not restarted (``zonechat down`` / ``up`` does that). The first node
that is not back within ``--timeout`` stops the run (exit 1); the ones done stay done.
"""
from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request

import click

from cluster import admin as admin_mod
from cluster import runstate
from cluster.cli import config_option, host_option, load_config
from cluster.metrics_cli import target

RESTART_ORDER = ("gate", "dc", "log", "login", "zone", "center")   # redis: never
POLL = 0.1              # seconds between two looks at the state file and /readyz
PROBE_TIMEOUT = 2.0     # seconds one /readyz request may take


class RollingError(click.ClickException):
    """The rolling restart cannot go on; the message says where it stopped and why."""


def seconds(text: str | None, default: float) -> float:
    return default if text is None else admin_mod.parse_duration(text)


# -- drain ------------------------------------------------------------------------------
@click.command("drain")
@click.argument("gate")
@click.option("--over", default=None, help="spread the moves over this long, e.g. 30s, 2m "
              "[default: gate.drain_over]")
@config_option
def drain(gate: str, over: str | None, config_path: str) -> None:
    """Move GATE's sessions to the other gates, then restart it.

    The gate stops accepting at once, ends its sessions with kicked{moving} (naming the
    other gates) spread evenly over --over, exits, and its supervisor starts it afresh."""
    cfg = load_config(config_path)
    result = request_drain(cfg, gate, seconds(over, cfg.gate.drain_over))
    click.echo(drain_line(result))


def request_drain(cfg, gate: str, over: float) -> dict:
    return admin_mod.call(cfg, "/v1/drain", {"node": gate, "over": over})


def drain_line(result: dict) -> str:
    if result.get("already"):
        return f"{result['node']} is draining already: {result['sessions']} sessions left"
    return (f"{result['node']} draining: moving {result['sessions']} sessions to the other gates "
            f"over {result['over']:g}s, then it exits and its supervisor starts it again")


# -- restart --rolling ------------------------------------------------------------------
@click.command("restart")
@click.argument("role", required=False, type=click.Choice(RESTART_ORDER))
@click.option("--rolling", is_flag=True, help="one node at a time (the only kind there is)")
@config_option
@host_option
@click.option("--over", default=None, help="how long each gate's drain takes, e.g. 30s "
              "[default: gate.drain_over]")
@click.option("--timeout", "timeout_text", default="60s", show_default=True,
              help="how long each node may take to be back and ready")
def restart(role: str | None, rolling: bool, config_path: str, host: str | None,
            over: str | None, timeout_text: str) -> None:
    """Restart this host's nodes one at a time, each ready before the next.

    Only ROLE's nodes, if given. The gates go first, drained (their clients move to the
    other gates at the drain's pace), then dc, log, login, the zones and center, each by
    SIGTERM and the supervisor's restart. The managed Redis is not restarted (zonechat
    down / up does that)."""
    if not rolling:
        raise click.UsageError("only rolling restarts exist: zonechat restart --rolling [ROLE]; "
                               "for a full one, zonechat down and zonechat up")
    cfg = load_config(config_path)
    run = RollingRestart(cfg, host, seconds(over, cfg.gate.drain_over), admin_mod.parse_duration(timeout_text))
    started = time.monotonic()
    names = run.plan(role)
    for name in names:
        click.echo(run.restart_one(name))
    click.echo(f"rolling restart done: {len(names)} nodes in {time.monotonic() - started:.1f}s")


def restart_plan(doc: dict, role: str | None = None) -> list[str]:
    """The nodes of a state file to restart, in order: gates first, then RESTART_ORDER's
    roles, by name within a role; only ``role``'s when given; never Redis."""
    nodes = doc.get("nodes") or {}
    roles = [role] if role else list(RESTART_ORDER)
    return [name for r in roles for name in sorted(n for n, e in nodes.items() if e.get("role") == r)]


def readyz_url(cfg, host: str | None, node: str) -> str:
    """``/readyz?node=NAME`` of this host's supervisor (``metrics.host``, else 127.0.0.1 on
    one host and the host's own address with ``--host``)."""
    return f"http://{target(cfg, host or '127.0.0.1')}/readyz?" + urllib.parse.urlencode({"node": node})


def probe_ready(url: str) -> tuple[bool | None, str]:
    """(True on 200, False on 503 or no answer in time, None when nothing listens there;
    what the answer said, for an error message)."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:
            return resp.status == 200, resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise RollingError(f"the supervisor's readiness endpoint does not know this node: {url}") from None
        return False, f"{exc.code}: " + exc.read(4096).decode("utf-8", "replace")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None, "connection refused"
        return False, str(exc.reason)
    except (OSError, ValueError) as exc:
        return False, str(exc)


class RollingRestart:
    """One run over one host's state file."""

    def __init__(self, cfg, host: str | None, over: float, timeout: float, out=click.echo):
        self.cfg, self.host, self.over, self.timeout, self.out = cfg, host, over, timeout, out
        self.path = runstate.state_path(cfg.data_dir, host)
        self.no_endpoint_said = False
        self.last_said = "no answer yet"      # the last /readyz answer, for a timeout's message

    def state(self) -> dict:
        """The state file of a running, ready supervisor, or RollingError."""
        doc = runstate.read(self.path)
        if doc is None or not runstate.alive(doc.get("pid"), doc.get("create_time")):
            raise RollingError(f"no supervisor runs for this config{' on ' + self.host if self.host else ''} "
                               f"(state file {self.path}); start it with zonechat up")
        if doc.get("state") != "ready":
            raise RollingError(f"the cluster is {doc.get('state')}, not ready: wait, or see zonechat status")
        return doc

    def plan(self, role: str | None) -> list[str]:
        names = restart_plan(self.state(), role)
        if not names:
            raise RollingError(f"no {role or 'zonechat'} node runs here")
        return names

    def restart_one(self, name: str) -> str:
        """Drain or SIGTERM ``name``, wait until it is back and ready; the line to print."""
        entry = self.state()["nodes"][name]
        pid, ctime = entry.get("pid"), entry.get("create_time")
        if entry.get("state") != "running" or not runstate.alive(pid, ctime):
            raise RollingError(f"{name} is {entry.get('state')}, not running: see zonechat status; "
                               "nothing was restarted for it")
        started = time.monotonic()
        settle = 0.0
        if entry.get("role") == "gate":
            result = request_drain(self.cfg, name, self.over)
            deadline, what = started + self.over + self.timeout, f"drained ({result['sessions']} sessions moved)"
            settle = result.get("retry_ms", 0) / 1000
        else:
            self.signal_verified(name, pid, ctime)
            deadline, what = started + self.timeout, "restarted"
        new_pid = self.wait_back(name, pid, deadline)
        line = f"{name} {what} and ready again (pid {pid} -> {new_pid}) in {time.monotonic() - started:.1f}s"
        time.sleep(settle)          # the moved clients land before the next step can move them again
        return line

    @staticmethod
    def signal_verified(name: str, pid: int, ctime: float) -> None:
        """SIGTERM ``pid`` only while it is still the process the state file recorded."""
        if not runstate.alive(pid, ctime):
            raise RollingError(f"{name}'s pid {pid} is no longer the process the supervisor started")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass                            # it exited meanwhile: the supervisor restarts it

    def wait_back(self, name: str, old_pid: int, deadline: float) -> int:
        """The new pid of ``name`` once it runs and /readyz says ready; RollingError at the deadline."""
        url, entry, pid = readyz_url(self.cfg, self.host, name), {}, None
        while time.monotonic() < deadline:
            entry = self.state()["nodes"].get(name) or {}
            pid = entry.get("pid")
            if pid and pid != old_pid and entry.get("state") == "running" \
                    and runstate.alive(pid, entry.get("create_time")) and self.ready(url):
                return pid
            time.sleep(POLL)
        raise RollingError(f"{name} was not back and ready within its deadline (--timeout {self.timeout:g}s; "
                           f"its state: {entry.get('state')}, pid {pid}; /readyz: {self.last_said}); "
                           "stopping the rolling restart here; see zonechat status")

    def ready(self, url: str) -> bool:
        answer, self.last_said = probe_ready(url)
        if answer is None:
            if not self.no_endpoint_said:
                self.no_endpoint_said = True
                self.out(f"no readiness endpoint answers at {url.split('?')[0]} (a supervisor older "
                         "than it?): trusting the state file alone", err=True)
            return True
        return answer

