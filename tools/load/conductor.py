"""The master side of a zonechat load run (Locust's master, or its only process).

``Plan``: what the run is (scenario, users, rate, windows), read from the command line.
``Conductor``: prepares the load users, steps the user count for ``ZonechatShape``
(steady: ramp, wait for every login, hold ``duration`` s, stop; knee: steps of
``knee_step`` users held ``step_time`` s each until a step's send→msg p99 passes
``p99_ms`` or it brings failures), prints a progress line every 2 s (kept, at most
``PROGRESS_MAX``, as the latency time series of the report) and writes ``results.json``
(the plan, the stats of the whole run and of the steady window, as plain dicts).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass

import gevent
from locust.runners import STATE_RUNNING, WORKER_REPORT_INTERVAL, MasterRunner

from tools.load import locust_client
from tools.load import report as lr

PROGRESS_EVERY = 2.0
RATE_WINDOW = 4.0       # seconds of per-second counts behind each progress line
SETTLE = 30.0           # seconds to wait for the last logins once every user is spawned
PROGRESS_MAX = 3600     # progress samples kept for results.json (2 hours at one per 2 s)
DEFAULT_RATE = {        # total msgs/s into the cluster for ``users`` users
    "world": lambda users: 10.0, "broadcast": lambda users: 2.0,
    "dm": lambda users: users * 0.5, "guild": lambda users: users * 0.5, "churn": lambda users: users * 0.2,
}


def out(line: str) -> None:
    """A progress line; ``zonechat loadtest`` shows the lines that carry this prefix."""
    sys.stdout.write(f"zonechat: {line}\n")
    sys.stdout.flush()


@dataclass
class Plan:
    scenario: str
    users: int
    spawn_rate: float
    rate: float
    duration: float
    cfg: object
    addrs: list
    workers: int = 1
    fixed: int = 0
    prefix: str = "lt"
    room: str = "world"
    guild_size: int = 20
    churn_every: float = 10.0
    knee: bool = False
    knee_step: int = 0
    step_time: float = 20.0
    p99_ms: float = 250.0
    max_seconds: float = 0.0
    out_dir: str = ""

    @property
    def interval(self) -> float:
        """Seconds between two sends of one load user (the Broadcaster: of all broadcasts)."""
        return (1.0 if self.scenario == "broadcast" else self.users) / self.rate

    @property
    def hold(self) -> float:
        return self.step_time if self.knee else self.duration

    def name(self, k: int) -> str:
        return f"{self.prefix}{k}"

    def guild(self, k: int) -> str:
        return f"g:{self.prefix}g{k // self.guild_size}"

    def prepared(self) -> int:
        """How many user names the run may use: users plus one per worker, rounded up to pairs."""
        n = self.users + self.workers
        return n + n % 2


def make_plan(opts, scenario: str, fixed: int) -> Plan:
    from cluster import config as config_mod
    cfg = config_mod.load(opts.zc_config)
    users = max(1, int(opts.num_users or 1))
    rate = opts.zc_rate or DEFAULT_RATE.get(scenario, DEFAULT_RATE["world"])(users)
    workers = opts.zc_workers or (opts.processes if (opts.processes or 0) > 0 else 1)
    plan = Plan(scenario=scenario, users=users, spawn_rate=float(opts.spawn_rate or 10), rate=rate,
                duration=opts.zc_duration, cfg=cfg, addrs=locust_client.gate_addrs(cfg), workers=workers,
                fixed=fixed, prefix=opts.zc_prefix, room=opts.zc_room, guild_size=opts.zc_guild_size,
                churn_every=opts.zc_churn_every, knee=opts.zc_knee,
                knee_step=opts.zc_knee_step or max(1, users // 5), step_time=opts.zc_step_time,
                p99_ms=opts.zc_p99_ms, out_dir=opts.zc_out)
    steps = math.ceil(users / plan.knee_step) if plan.knee else 1
    plan.max_seconds = opts.zc_max_seconds or (users / plan.spawn_rate + steps * (SETTLE + plan.hold) + 60)
    return plan


class Conductor:
    def __init__(self, env, plan: Plan):
        self.env, self.plan = env, plan
        self.target = plan.knee_step if plan.knee else plan.users
        self.t0 = self.hold_from = self.spawned_at = None
        self.window_snap: dict = {}
        self.done = False
        self.failed = ""
        self.knee = {"steps": [], "knee_users": 0, "why": "", "p99_ms": plan.p99_ms} if plan.knee else None
        self.results = {"scenario": plan.scenario, "users": plan.users, "rate": plan.rate,
                        "duration": plan.duration, "accounts": plan.prepared(), "workers": plan.workers,
                        "fixed": plan.fixed, "p99_ms": plan.p99_ms, "prefix": plan.prefix, "room": plan.room,
                        "guild_size": plan.guild_size, "churn_every": plan.churn_every,
                        "started_at": time.time()}
        self.progress_log: deque = deque(maxlen=PROGRESS_MAX)
        self.reporter = None

    @property
    def lag(self) -> float:
        """How far the stats here trail the users: workers report every few seconds."""
        return WORKER_REPORT_INTERVAL + 1.0 if isinstance(self.env.runner, MasterRunner) else 1.0

    def snap(self) -> dict:
        return lr.snapshot(list(self.env.runner.stats.entries.values()))

    # -- before the users ------------------------------------------------------------------
    def prepare(self) -> None:
        plan = self.plan
        names = [plan.name(k) for k in range(plan.prepared())]
        rosters = {}
        if plan.scenario == "guild":
            for k in range(0, len(names), plan.guild_size):
                rosters[plan.guild(k)] = names[k:k + plan.guild_size]
        out(f"prepare: {len(names)} load accounts for {plan.users} users (one spare per Locust worker, "
            f"rounded up to DM pairs) on {len(plan.addrs)} gate(s), {plan.rate:g} msgs/s in "
            f"(one send per {plan.interval:.2f}s per sender)")
        if plan.scenario != "broadcast" and 1.0 / plan.interval > plan.cfg.gate.send_rate:
            out(f"warning: {1.0 / plan.interval:.1f} sends/s per user is over gate.send_rate "
                f"({plan.cfg.gate.send_rate:g}): expect rate_limited errors")
        try:
            locust_client.prepare(plan.cfg, plan.addrs, names, rosters, out)
        except Exception as exc:             # logged, and the run ends at the next tick
            self.failed = f"prepare failed: {exc}"
            self.results["failed"] = self.failed
            out(self.failed)
            self.finish()
        self.t0 = time.monotonic()
        if self.reporter is None:
            self.reporter = gevent.spawn(self.progress_reporter)
            self.reporter.link_exception(lambda g: out(f"progress reporter crashed: {g.exception!r}"))

    # -- the shape -------------------------------------------------------------------------
    def tick(self):
        """(users, spawn rate) for ZonechatShape, or None to end the run."""
        if self.done:
            return None
        if self.t0 is not None and time.monotonic() - self.t0 > self.plan.max_seconds:
            out(f"hard limit of {self.plan.max_seconds:.0f}s reached: stopping")
            return self.finish()
        want = (self.target + self.plan.fixed, self.plan.spawn_rate)
        if self.hold_from is None:
            if self.ready():
                self.hold_from, self.window_snap = time.time(), self.snap()
                out(f"steady: {self.target} users logged in; measuring for {self.plan.hold:g}s")
            return want
        if time.time() - self.hold_from < self.plan.hold:
            return want
        return self.end_window()

    def ready(self) -> bool:
        """Every user spawned and in the game (logged in, joined), or SETTLE s after the last
        spawn (a user whose login failed is gone)."""
        runner = self.env.runner
        if runner.state != STATE_RUNNING:
            self.spawned_at = None
            return False
        self.spawned_at = self.spawned_at or time.monotonic()
        stats = runner.stats
        in_game = stats.get(lr.USER_IN, lr.INFO).num_requests - stats.get(lr.USER_OUT, lr.INFO).num_requests
        return in_game >= self.target or time.monotonic() - self.spawned_at > SETTLE

    def end_window(self):
        now = time.time()
        window = {"users": self.target, "start": self.hold_from, "end": now,
                  "stats": lr.diff(self.snap(), self.window_snap)}
        if not self.plan.knee:
            self.results["steady"] = window
            return self.finish()
        if self.knee_step(window):
            return self.finish()
        self.target = min(self.plan.users, self.target + self.plan.knee_step)
        self.hold_from = None
        return (self.target + self.plan.fixed, self.plan.spawn_rate)

    def knee_step(self, window: dict) -> bool:
        """Record one knee step; True when the run should end."""
        fig = lr.window_figures(window["stats"], 0, (window["start"], window["end"] - self.lag))
        failures = sum(e["fail"] for e in window["stats"].values() if e["type"] != lr.INFO)
        p99 = fig["e2e_ms"]["p99"]
        self.knee["steps"].append({"users": self.target, "start": window["start"], "end": window["end"],
                                   "msgs_in_per_s": fig["msgs_in_per_s"],
                                   "deliveries_per_s": fig["deliveries_per_s"], "e2e_ms": fig["e2e_ms"],
                                   "ack_ms": fig["ack_ms"], "failures": failures})
        out(f"step {self.target} users: {fig['deliveries_per_s']:,} deliveries/s, e2e p99 {p99} ms, "
            f"{failures} failures")
        bad = failures > 0 or (p99 is not None and p99 > self.plan.p99_ms)
        if not bad or "steady" not in self.results:
            self.results["steady"] = window
        if not bad:
            self.knee["knee_users"] = self.target
        if bad:
            self.knee["why"] = f"at {self.target} users: e2e p99 {p99} ms (limit {self.plan.p99_ms:g}), {failures} failures"
        elif self.target >= self.plan.users:
            self.knee["why"] = f"no knee up to {self.plan.users} users"
        return bad or self.target >= self.plan.users

    def finish(self):
        self.done = True
        if self.knee is not None:
            self.results["knee"] = self.knee
        return None

    # -- progress and results ----------------------------------------------------------------
    def progress_reporter(self) -> None:
        """A line every 2 s; latencies over the last 2 s, or 6 s behind a master (worker
        reports come every 3 s); rates from the per-second counts (see count_between)."""
        history = deque([self.snap()], maxlen=3 if isinstance(self.env.runner, MasterRunner) else 1)
        limit = time.monotonic() + self.plan.max_seconds + 120
        while time.monotonic() < limit:
            gevent.sleep(PROGRESS_EVERY)
            now = self.snap()
            self.progress(lr.diff(now, history[0]), now)
            history.append(now)

    def progress(self, window: dict, total: dict) -> None:
        t1 = time.time() - self.lag
        fig = lr.window_figures(window, 0, (t1 - RATE_WINDOW, t1), total)
        errors = sum(e["fail"] for e in total.values() if e["type"] not in (lr.CHECK, lr.INFO))
        checks = sum(lr.correctness(total).values())
        phase = "done" if self.done else ("steady" if self.hold_from else "ramp")
        sample = {"t": round(time.time(), 2), "phase": phase, "users": self.env.runner.user_count,
                  "in_per_s": fig["msgs_in_per_s"], "out_per_s": fig["deliveries_per_s"],
                  "ack_p50": fig["ack_ms"]["p50"], "ack_p99": fig["ack_ms"]["p99"],
                  "e2e_p50": fig["e2e_ms"]["p50"], "e2e_p99": fig["e2e_ms"]["p99"],
                  "errors": errors, "correctness": checks}
        self.progress_log.append(sample)
        out(f"{time.monotonic() - (self.t0 or 0):5.0f}s {phase:6} users {sample['users']:>5}  "
            f"in {sample['in_per_s']:>8,.1f}/s  out {sample['out_per_s']:>10,.1f}/s  "
            f"ack p99 {sample['ack_p99']} ms  e2e p99 {sample['e2e_p99']} ms  "
            f"errors {errors}  correctness {checks}")

    def write_results(self) -> int:
        """results.json (when --zc-out is set); the process exit code: 1 unless correct and delivered."""
        if self.reporter is not None:
            self.reporter.kill(block=False)
        stats = self.env.runner.stats
        total = self.snap()
        self.results["ended_at"] = time.time()
        if "steady" not in self.results and self.hold_from is not None:      # stopped early
            self.results["steady"] = {"users": self.target, "start": self.hold_from, "end": time.time(),
                                      "stats": lr.diff(total, self.window_snap), "partial": True}
        self.results["total"] = {"stats": total, "errors": [e.serialize() for e in stats.errors.values()]}
        self.results["progress"] = list(self.progress_log)
        self.results["progress_window"] = PROGRESS_EVERY * (3 if isinstance(self.env.runner, MasterRunner) else 1)
        if self.plan.out_dir:
            os.makedirs(self.plan.out_dir, exist_ok=True)
            with open(os.path.join(self.plan.out_dir, "results.json"), "w", encoding="utf-8") as fh:
                json.dump(self.results, fh, indent=1)
        checks = sum(lr.correctness(total).values())
        delivered = lr.deliveries(total)
        out(f"done: {lr.msgs_in(total):,} msgs in, {delivered:,} delivered, {checks} correctness errors")
        return 1 if checks or not delivered else 0
