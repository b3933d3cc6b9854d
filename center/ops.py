"""The operator view on center's admin port: ``GET /ops`` (a page) and ``GET /v1/ops`` (data).

Every gate, zone, dc and login node sends center a ``stats`` envelope once a second
(``cluster/stats.py``). Center keeps the latest report per configured node (one each:
reports from names not in the config are ignored) and computes per-second rates from two
successive reports of a node, by the node's own clock: ``in_per_s``/``out_per_s`` (client
frames through a gate) and ``stored_per_s`` (messages a zone stored). It also keeps the
last ``ACTIONS_KEPT`` admin actions (what the audit log records, newest first).

The page files (``center/static/``) hold no data and are served without the secret; the
page asks for the cluster secret, keeps it in the tab's ``sessionStorage`` and polls
``/v1/ops`` every second with ``Authorization: Bearer``, like any admin request.
"""
from __future__ import annotations

import collections
import json
import os
import time

from cluster import pages

ACTIONS_KEPT = 50
ARGS_SHOWN = 200             # characters of an action's JSON arguments kept for the view
STALE_AFTER = 3.0            # seconds without a report: the node is shown as stale
ROLES = ("gate", "zone", "dc", "login")     # login: answers by kind, its hash pool (login/node.py)
RATES = {"frames_in": "in_per_s", "frames_out": "out_per_s", "stored": "stored_per_s"}
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGES = {
    "/ops": ("ops.html", "text/html; charset=utf-8"),
    "/ops.js": ("ops.js", "text/javascript; charset=utf-8"),
    "/ops.css": ("ops.css", "text/css; charset=utf-8"),
}
HEADERS = pages.SECURITY_HEADERS


def load_pages(directory: str = STATIC_DIR) -> dict:
    """path -> (bytes, content type) for every page file that exists."""
    return pages.load_pages(directory, PAGES)


def rates(prev: dict | None, cur: dict) -> dict:
    """Per-second rates between two reports of one node (None for a node's first report).
    A counter that went down means the node restarted: what it counted since is used."""
    dt = cur.get("t", 0) - prev.get("t", 0) if prev else 0
    out = {}
    for key, name in RATES.items():
        if key not in cur:
            continue
        if dt <= 0 or key not in prev:
            out[name] = None
            continue
        delta = cur[key] - prev[key]
        out[name] = round((delta if delta >= 0 else cur[key]) / dt, 1)
    return out


class Ops:
    def __init__(self, center):
        self.center = center
        self.nodes = {role: sorted(n.name for n in center.config.nodes_of(role)) for role in ROLES}
        self.known = {name: role for role, names in self.nodes.items() for name in names}
        self.reports: dict = {}         # node -> its latest report, rates and arrival time
        self.actions: collections.deque = collections.deque(maxlen=ACTIONS_KEPT)
        self.files = load_pages()
        self.started = time.time()

    def on_stats(self, env) -> None:
        node, role, counters = env      # a Stats envelope
        if self.known.get(node) != role or not isinstance(counters, dict):
            return
        prev = self.reports.get(node)
        self.reports[node] = {**counters, **rates(prev, counters), "received": time.monotonic()}

    def action(self, name: str, args: dict) -> None:
        """An admin action went through (recorded where the audit record is written)."""
        shown = json.dumps(args, sort_keys=True, default=str)
        if len(shown) > ARGS_SHOWN:
            shown = shown[:ARGS_SHOWN - 1] + "…"
        self.actions.appendleft({"action": name, "args": shown, "at": int(time.time() * 1000)})

    def node_view(self, name: str, now: float) -> dict:
        report = self.reports.get(name)
        if report is None:
            return {"node": name, "age_s": None, "stale": True}
        view = {k: v for k, v in report.items() if k not in ("received", "t")}
        age = now - report["received"]
        view.update(node=name, age_s=round(age, 1), stale=age > STALE_AFTER)
        return view

    def snapshot(self) -> dict:
        """What ``GET /v1/ops`` answers."""
        now = time.monotonic()
        center = dict(self.center.snapshot(), uptime_s=round(time.time() - self.started))
        out = {"at": int(time.time() * 1000), "center": center, "actions": list(self.actions)}
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
