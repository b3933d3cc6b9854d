"""The operator view on center's admin port: ``GET /ops`` (a page) and ``GET /v1/ops`` (data).

Every gate, zone, dc and login node sends center a ``stats`` envelope once a second
(``cluster/stats.py``). Center keeps the latest report per configured node (one each:
reports from names not in the config are ignored) and derives, from two successive
reports of a node by the node's own clock:

* per-second rates (``rates()``): ``in_per_s``/``out_per_s`` (client frames through a
  gate), ``deliveries_per_s`` (messages a gate queued for clients), ``errors_per_s``
  (error answers a gate sent; a zone's refusals), ``stored_per_s`` (messages a zone stored);
* its process (``proc_view()``): ``cpu_pct`` (CPU seconds used per second, in %), ``rss``
  (bytes), ``fds``, ``uptime_s`` and ``restarts`` (by the supervisor);
* a gate's ack latency of the last second (``ack_view()``): bucket deltas and their p99.

A counter that went down, or a node whose process start time changed, restarted: what it
counted since is used. Center reports on itself the same way (``cluster.stats.Proc``,
sampled once a second with the history).

``history`` (``center/ops_history.py``) is the last 15 minutes of cluster-wide series, one
point a second, sampled on the report ticks (no timer of its own: see there). Errors are
counted once: ``errors_per_s`` is every error answer the gates sent to clients (a zone's
refusal reaches its client through a gate, so it is in there), ``refusals_per_s`` the
zones' part of it.

Center also keeps the last ``ACTIONS_KEPT`` admin actions (what the audit log records,
newest first), each with a readable name (``center/ops_actions.py``: an unban is "unban").

The page files (``center/static/``, the vendored uPlot charts in ``static/vendor/``) hold
no data and are served without the secret; the page asks for the cluster secret, keeps it
in the tab's ``sessionStorage`` and polls ``/v1/ops`` every second with ``Authorization:
Bearer``, like any admin request; its actions call the admin endpoints the same way.
"""
from __future__ import annotations

import collections
import json
import os
import time

from center.ops_actions import describe
from center.ops_history import History, bucket_deltas, counter_delta, merge, quantile, sum_known
from cluster import pages
from cluster.metrics import ACK_BOUNDS
from cluster.stats import Proc

ACTIONS_KEPT = 50
ARGS_SHOWN = 200             # characters of an action's JSON arguments kept for the view
STALE_AFTER = 3.0            # seconds without a report: the node is shown as stale
ROLES = ("gate", "zone", "dc", "login")     # login: answers by kind, its hash pool (login/node.py)
RATES = {"frames_in": "in_per_s", "frames_out": "out_per_s", "stored": "stored_per_s",
         "deliveries": "deliveries_per_s", "errors": "errors_per_s"}
HIDDEN = ("received", "t", "proc", "ack_counts", "ack_delta")   # kept, not shown
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
JS, CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
PAGES = {
    "/ops": ("ops.html", "text/html; charset=utf-8"),
    "/ops.js": ("ops.js", JS),
    "/ops_format.js": ("ops_format.js", JS),
    "/ops_graphs.js": ("ops_graphs.js", JS),
    "/ops_actions.js": ("ops_actions.js", JS),
    "/ops.css": ("ops.css", CSS),
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", JS),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", CSS),
    "/vendor/uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}
HEADERS = pages.SECURITY_HEADERS


def load_pages(directory: str = STATIC_DIR) -> dict:
    """path -> (bytes, content type) for every page file that exists."""
    return pages.load_pages(directory, PAGES)


def counter_value(report: dict, key: str):
    """A counter of a report: a number, or the sum of a map of them (errors by code)."""
    value = report.get(key)
    if isinstance(value, dict):
        return sum(n for n in value.values() if isinstance(n, (int, float)))
    return value


def restarted(prev: dict | None, cur: dict) -> bool:
    """The node's process changed between two reports (its start time did)."""
    before, now = (prev or {}).get("proc") or {}, cur.get("proc") or {}
    return "started_at" in before and "started_at" in now and before["started_at"] != now["started_at"]


def rates(prev: dict | None, cur: dict) -> dict:
    """Per-second rates between two reports of one node (None for a node's first report).
    A counter that went down means the node restarted: what it counted since is used."""
    dt = cur.get("t", 0) - prev.get("t", 0) if prev else 0
    fresh = restarted(prev, cur)
    out = {}
    for key, name in RATES.items():
        if key not in cur:
            continue
        if dt <= 0 or key not in prev:
            out[name] = None
            continue
        out[name] = round(counter_delta(counter_value(prev, key), counter_value(cur, key), fresh) / dt, 1)
    return out


def proc_view(prev: dict | None, cur: dict) -> dict:
    """CPU %, memory, open files, uptime and restarts of a report's ``proc`` ({} without)."""
    proc = cur.get("proc")
    if not isinstance(proc, dict):
        return {}
    before = (prev or {}).get("proc") or {}
    dt = cur.get("t", 0) - (prev or {}).get("t", 0) if prev else 0
    cpu = None
    if dt > 0 and "cpu_s" in before and "cpu_s" in proc:
        used = counter_delta(before["cpu_s"], proc["cpu_s"], restarted(prev, cur))
        cpu = round(100 * used / dt, 1)
    started = proc.get("started_at")
    return {"cpu_pct": cpu, "rss": proc.get("rss"), "fds": proc.get("fds"),
            "uptime_s": round(cur["t"] - started) if started and "t" in cur else None,
            "restarts": proc.get("restarts")}


def ack_view(prev: dict | None, cur: dict) -> dict:
    """A gate's ack buckets of its last interval (``ack_delta``) and their p99 in ms."""
    counts = cur.get("ack_counts")
    if not isinstance(counts, list):
        return {}
    if prev is None or not isinstance(prev.get("ack_counts"), list):
        return {"ack_delta": None, "ack_p99_ms": None}   # since the gate started: not "now"
    delta = bucket_deltas(prev["ack_counts"], counts, restarted(prev, cur))
    return {"ack_delta": delta, "ack_p99_ms": ms(quantile(0.99, ACK_BOUNDS, delta))}


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def shown_args(args: dict) -> str:
    shown = json.dumps(args, sort_keys=True, default=str)
    return shown if len(shown) <= ARGS_SHOWN else shown[:ARGS_SHOWN - 1] + "…"


class Ops:
    def __init__(self, center):
        self.center = center
        self.nodes = {role: sorted(n.name for n in center.config.nodes_of(role)) for role in ROLES}
        self.known = {name: role for role, names in self.nodes.items() for name in names}
        self.reports: dict = {}         # node -> its latest report, rates and arrival time
        self.actions: collections.deque = collections.deque(maxlen=ACTIONS_KEPT)
        self.history = History()
        self.files = load_pages()
        self.started = time.time()
        self.proc = Proc()              # center's own process, sampled with the history
        self.own_report: dict | None = None
        self.own_view: dict = {}

    def on_stats(self, env) -> None:
        node, role, counters = env      # a Stats envelope
        if self.known.get(node) != role or not isinstance(counters, dict):
            return
        prev = self.reports.get(node)
        self.reports[node] = {**counters, **rates(prev, counters), **proc_view(prev, counters),
                              **ack_view(prev, counters), "received": time.monotonic()}
        self.tick()

    def action(self, name: str, args: dict) -> None:
        """An admin action went through (recorded where the audit record is written)."""
        self.actions.appendleft({"action": name, **describe(name, args), "args": shown_args(args),
                                 "at": int(time.time() * 1000)})

    # -- the history ----------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """At most once a second: a history row, and center's own process sample."""
        now = time.time() if now is None else now
        if not self.history.due(now):
            return
        self.history.add(now, self.point(time.monotonic()))
        self.sample_self(now)

    def live(self, role: str, mono: float) -> list:
        """The latest reports of the nodes of ``role`` that are not stale."""
        reports = (self.reports.get(name) for name in self.nodes[role])
        return [r for r in reports if r is not None and mono - r["received"] <= STALE_AFTER]

    def point(self, mono: float) -> dict:
        """The cluster-wide values now: sums over the live nodes' latest reports."""
        gates, zones = self.live("gate", mono), self.live("zone", mono)
        acks = merge(g.get("ack_delta") for g in gates)
        return {"msgs_per_s": sum_known(z.get("stored_per_s") for z in zones),
                "deliveries_per_s": sum_known(g.get("deliveries_per_s") for g in gates),
                "sessions": sum_known(g.get("sessions") for g in gates),
                "errors_per_s": sum_known(g.get("errors_per_s") for g in gates),
                "refusals_per_s": sum_known(z.get("errors_per_s") for z in zones),
                "ack_p99_ms": ms(quantile(0.99, ACK_BOUNDS, acks))}

    def sample_self(self, now: float) -> None:
        report = {"t": now, "proc": self.proc.sample()}
        self.own_view = proc_view(self.own_report, report)
        self.own_report = report

    # -- the view -------------------------------------------------------------------------
    def node_view(self, name: str, now: float) -> dict:
        report = self.reports.get(name)
        if report is None:
            return {"node": name, "age_s": None, "stale": True}
        view = {k: v for k, v in report.items() if k not in HIDDEN}
        age = now - report["received"]
        view.update(node=name, age_s=round(age, 1), stale=age > STALE_AFTER)
        return view

    def snapshot(self, since: int | None = None) -> dict:
        """What ``GET /v1/ops[?since=T]`` answers: the history rows after second ``since``
        only (``history_whole`` false), or all of them."""
        self.tick()
        now = time.monotonic()
        center = {**self.center.snapshot(), "uptime_s": round(time.time() - self.started), **self.own_view}
        history, whole = self.history.columns(since)
        out = {"at": int(time.time() * 1000), "center": center, "actions": list(self.actions),
               "history": history, "history_whole": whole, "history_seconds": self.history.rows.maxlen,
               "now": self.point(now)}
        for role, names in self.nodes.items():
            out[role + "s"] = [self.node_view(name, now) for name in names]
        out["redis"] = next((d["redis"] for d in out["dcs"] if d.get("redis")), {})
        return out

    # -- the page -------------------------------------------------------------------------
    def page(self, environ, start_response):
        """A page file for GET/HEAD of one of PAGES (no data in it); None otherwise."""
        found = self.files.get(environ.get("PATH_INFO", ""))
        if found is None or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return None
        body, ctype = found
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                  *HEADERS])
        return [body]
