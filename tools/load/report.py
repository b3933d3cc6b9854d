"""The arithmetic of ``zonechat loadtest`` reports: stats windows, percentiles, the summary.

No I/O and no Locust import: the locustfile snapshots Locust's stats entries into plain
dicts (``snapshot``), the command turns the run's ``results.json`` and its process
samples into ``summary.json`` / ``summary.md`` (``summarize``, ``render_markdown``); the
words come from ``verdict`` and ``notes``, the charts' series from ``series``, the HTML
from ``htmlreport``.

A snapshot maps ``"<type> <name>"`` to ``{type, name, n, fail, max, rt}`` where ``rt`` is
Locust's response-time histogram (milliseconds, rounded as Locust rounds them, -> count).
"""
from __future__ import annotations

import math

from tools.load import series
from tools.load import verdict as verdicts
from tools.load.markdown import render_markdown  # noqa: F401  (summary.md, kept here for callers)

REQ, CHECK, INFO, ADMIN = "zc", "check", "info", "admin"
ACK = "send→ack"
E2E = ("send→msg", "sys→msg")          # deliveries timed end to end from the sender's ts
REPLAY = "replay→msg"                   # offline messages pushed after a login
LOGINS = ("login", "relogin")
BROADCAST = "broadcast"
# counted events (type ``info``): a load user in / out of the game (logged in, joined; stopped),
# a session opened / closed (churn reconnects), a seq pushed again, one from before the user's
# first login, a user's own message pushed, a send the user was stopped in (its ack never
# counted, the message maybe stored and delivered)
USER_IN, USER_OUT = "user in", "user out"
SESSION_OPEN, SESSION_CLOSED = "session open", "session closed"
REDELIVERED, EARLIER, OWN, CUT = "redelivered", "earlier msg", "own msg", "send cut"
CORRECTNESS = ("client.dups", "client.gaps", "client.missed", "client.out_of_order",
               "client.lost", "client.fill_failed", "client.bad_frames",
               "seq.dup", "seq.out_of_order", "seq.gap", "kicked")


def percentile(hist: dict, p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0-100) of a {value: count} histogram; None if empty."""
    items = sorted((float(k), c) for k, c in hist.items() if c > 0)
    total = sum(c for _, c in items)
    if not total:
        return None
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for value, count in items:
        seen += count
        if seen >= rank:
            return value
    return items[-1][0]


def merge(hists) -> dict:
    out: dict = {}
    for hist in hists:
        for k, c in hist.items():
            key = float(k)
            out[key] = out.get(key, 0) + c
    return out


def snapshot(entries) -> dict:
    """Plain-dict copy of Locust StatsEntry-like objects (method, name, num_requests, ...)."""
    snap = {}
    for e in entries:
        snap[f"{e.method} {e.name}"] = {
            "type": e.method, "name": e.name, "n": e.num_requests, "fail": e.num_failures,
            "max": e.max_response_time or 0, "rt": {str(k): c for k, c in e.response_times.items()},
            "ps": {str(k): c for k, c in e.num_reqs_per_sec.items()},
            "fps": {str(k): c for k, c in e.num_fail_per_sec.items()}}
    return snap


def diff(after: dict, before: dict) -> dict:
    """The window between two snapshots (``max`` becomes the window histogram's top)."""
    out = {}
    for key, a in after.items():
        b = before.get(key, {"n": 0, "fail": 0, "rt": {}})
        rt = {k: c - b["rt"].get(k, 0) for k, c in a["rt"].items()}
        rt = {k: c for k, c in rt.items() if c > 0}
        out[key] = {"type": a["type"], "name": a["name"], "n": a["n"] - b["n"],
                    "fail": a["fail"] - b["fail"], "max": max(map(float, rt), default=0.0), "rt": rt,
                    "ps": a.get("ps", {}), "fps": a.get("fps", {})}
    return out


def count_between(entries: list[dict], t0: float, t1: float) -> int:
    """Successes in whole seconds [t0, t1) by Locust's per-second counts, which are keyed by
    when each request happened (on the worker), so a distributed run's report lag drops out."""
    total = 0
    for e in entries:
        ps, fps = e.get("ps") or {}, e.get("fps") or {}
        for sec in range(int(t0), int(t1)):
            total += ps.get(str(sec), 0) - fps.get(str(sec), 0)
    return total


def per_second(entries: list[dict]) -> dict[int, int]:
    """{second: successes} of the entries together, from Locust's per-second counts."""
    out: dict[int, int] = {}
    for e in entries:
        fps = e.get("fps") or {}
        for sec, count in (e.get("ps") or {}).items():
            out[int(sec)] = out.get(int(sec), 0) + count - fps.get(sec, 0)
    return out


def pick(snap: dict, names, kind: str = REQ) -> list[dict]:
    names = (names,) if isinstance(names, str) else tuple(names)
    return [e for e in snap.values() if e["type"] == kind and e["name"] in names]


def latency(snap: dict, names, kind: str = REQ) -> dict:
    """count and p50/p95/p99/max (ms) of the named entries together."""
    entries = pick(snap, names, kind)
    hist = merge(e["rt"] for e in entries)
    out = {"count": sum(e["n"] - e["fail"] for e in entries), "failures": sum(e["fail"] for e in entries)}
    for p in (50, 95, 99):
        out[f"p{p}"] = percentile(hist, p)
    out["max"] = round(max(float(e["max"]) for e in entries), 1) if entries else None
    return out


def ok_count(snap: dict, names, kind: str = REQ) -> int:
    return sum(e["n"] - e["fail"] for e in pick(snap, names, kind))


def in_entries(snap: dict) -> list[dict]:
    """Messages stored: acked sends plus broadcasts the admin endpoint accepted."""
    return pick(snap, ACK) + pick(snap, BROADCAST, ADMIN)


def out_entries(snap: dict) -> list[dict]:
    return pick(snap, E2E + (REPLAY,))


def msgs_in(snap: dict) -> int:
    return sum(e["n"] - e["fail"] for e in in_entries(snap))


def deliveries(snap: dict) -> int:
    return sum(e["n"] - e["fail"] for e in out_entries(snap))


def correctness(snap: dict) -> dict:
    counts = dict.fromkeys(CORRECTNESS, 0)
    for e in snap.values():
        if e["type"] == CHECK:
            counts[e["name"]] = counts.get(e["name"], 0) + e["fail"]
    return counts


def errors_by_code(errors: list[dict]) -> dict:
    """Locust's error rows ({method, name, error, occurrences}) as {"name: code": count}."""
    out: dict = {}
    for row in errors:
        if row.get("method") == CHECK:
            continue
        key = f"{row.get('name')}: {row.get('error')}"
        out[key] = out.get(key, 0) + int(row.get("occurrences", 0))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def process_table(procs: dict, start: float | None, end: float | None) -> list[dict]:
    """CPU% (mean, max) and RSS (MiB, max and last) of each sampled process in [start, end]."""
    rows = []
    for name, proc in procs.items():
        samples = proc.get("samples") or []
        inside = [s for s in samples if start is not None and start <= s[0] <= (end or s[0])] or samples
        if not inside:
            continue
        cpus = [s[1] for s in inside]
        rows.append({"name": name, "role": proc.get("role", ""), "pid": proc.get("pid"),
                     "cpu_avg": round(sum(cpus) / len(cpus), 1), "cpu_max": round(max(cpus), 1),
                     "rss_mb_max": round(max(s[2] for s in inside) / 2**20, 1),
                     "rss_mb_last": round(inside[-1][2] / 2**20, 1)})
    return rows


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def breakdown(src: dict, span: tuple | None) -> dict:
    """Deliveries by kind: ``live`` (send→msg, sys→msg), ``replayed`` (pushed after a login);
    of these, ``redelivered`` (seen in an earlier session), ``earlier`` (from before the user's
    first login) and ``own`` (the user's own); ``cut``: sends whose ack went uncounted."""
    def count(names, kind: str = REQ) -> int:
        entries = pick(src, names, kind)
        return count_between(entries, *span) if span else sum(e["n"] - e["fail"] for e in entries)

    return {"live": count(E2E), "replayed": count(REPLAY), "redelivered": count(REDELIVERED, INFO),
            "earlier": count(EARLIER, INFO), "own": count(OWN, INFO), "cut": count(CUT, INFO)}


def window_figures(snap: dict, seconds: float, span: tuple | None = None, totals: dict | None = None) -> dict:
    """Counts, rates and latencies of a window; with ``span`` (t0, t1) the counts are taken
    from the per-second counts (of ``totals``, a later snapshot, if given) in those whole
    seconds (see count_between)."""
    src = (totals or snap) if span else snap
    if span:
        n_in, n_out = count_between(in_entries(src), *span), count_between(out_entries(src), *span)
        seconds = int(span[1]) - int(span[0])
    else:
        n_in, n_out = msgs_in(snap), deliveries(snap)
    return {"seconds": round(seconds, 1), "msgs_in": n_in, "deliveries": n_out,
            "msgs_in_per_s": rate(n_in, seconds), "deliveries_per_s": rate(n_out, seconds),
            "ack_ms": latency(snap, ACK), "e2e_ms": latency(snap, E2E), **breakdown(src, span)}


def logged_in(snap: dict, span: tuple | None) -> dict | None:
    """Load users in the game and sessions logged in, per second of ``span``: min, max, mean."""
    ups = per_second(pick(snap, USER_IN, INFO))
    if not span or not ups:
        return None
    seconds = list(range(int(span[0]), int(span[1]))) or [int(span[0])]

    def stats(up: dict, down: dict) -> dict:
        lv = series.levels(up, down, seconds)
        return {"min": min(lv), "max": max(lv), "mean": round(sum(lv) / len(lv), 1)}

    return {"users": stats(ups, per_second(pick(snap, USER_OUT, INFO))),
            "sessions": stats(per_second(pick(snap, SESSION_OPEN, INFO)),
                              per_second(pick(snap, SESSION_CLOSED, INFO)))}


def run_series(results: dict, procs: dict, snap: dict) -> dict:
    """The charts' time series (bounded, see tools.load.series), x in seconds since the start."""
    t0 = results.get("started_at") or 0.0
    t1 = results.get("ended_at") or t0
    steady = results.get("steady") or {}
    users = (per_second(pick(snap, USER_IN, INFO)), per_second(pick(snap, USER_OUT, INFO)))
    window = [round(steady["start"] - t0, 1), round(steady["end"] - t0, 1)] \
        if steady.get("start") and steady.get("end") else None
    cpu = series.cpu(procs, t0, t1)
    cpu["users"] = series.levels(*users, [int(t0 + x) - 1 for x in cpu["t"]]) if users[0] else [None] * len(cpu["t"])
    return {"throughput": series.throughput(per_second(in_entries(snap)), per_second(out_entries(snap)),
                                            users, t0, t1),
            "latency": series.latency(results.get("progress") or [], t0), "cpu": cpu,
            "steady": window, "bound_ms": results.get("p99_ms"), "latency_window_s": results.get("progress_window"),
            "knee": [[round(k["start"] - t0, 1), round(k["end"] - t0, 1), k["users"]]
                     for k in (results.get("knee") or {}).get("steps", []) if k.get("start") and k.get("end")]}


def run_facts(results: dict) -> dict:
    """What the run was, from results.json (the conductor's plan)."""
    return {"scenario": results.get("scenario"), "users": results.get("users"), "rate_target": results.get("rate"),
            "accounts": results.get("accounts"), "locust_workers": results.get("workers"),
            "fixed_users": results.get("fixed", 0), "p99_bound_ms": results.get("p99_ms"),
            "prefix": results.get("prefix"), "room": results.get("room"), "guild_size": results.get("guild_size"),
            "churn_every": results.get("churn_every")}


def summarize(results: dict, procs: dict, meta: dict) -> dict:
    """The summary of one run: ``results.json`` of the locustfile plus the process samples.
    Its first keys are the verdict line and the advice (see tools.load.verdict)."""
    total, steady = results.get("total") or {}, results.get("steady") or {}
    s_snap, t_snap = steady.get("stats") or {}, total.get("stats") or {}
    start, end = steady.get("start"), steady.get("end")
    span = (start, end) if start and end else None
    checks = correctness(t_snap)
    summary = {**meta, **run_facts(results),
               "steady": {"users": steady.get("users"), **window_figures(s_snap, 0, span, t_snap),
                          "logged_in": logged_in(t_snap, span)},
               "total": {**window_figures(t_snap, (results.get("ended_at") or 0) - (results.get("started_at") or 0)),
                         "login_ms": latency(t_snap, LOGINS)},
               "errors": errors_by_code(total.get("errors") or []),
               "correctness": {"counters": checks, "errors": sum(checks.values())},
               "processes": process_table(procs.get("cluster", {}), start, end),
               "generator": process_table(procs.get("generator", {}), start, end)}
    if results.get("knee"):
        summary["knee"] = knee_figures(results["knee"], t_snap)
    summary["cluster_cpu_avg"] = round(sum(p["cpu_avg"] for p in summary["processes"]), 1)
    summary["generator_cpu_avg"] = round(sum(p["cpu_avg"] for p in summary["generator"]), 1)
    li = summary["steady"]["logged_in"]
    summary["held_users"] = li["users"]["min"] if li else steady.get("users")
    summary["verdict"], summary["reasons"] = verdict(summary, results)
    summary["latency_ok"] = latency_ok(summary)
    summary["held"] = verdicts.held(summary)
    summary["series"] = run_series(results, procs, t_snap)
    return {"verdict_line": verdicts.line(summary), "advice": verdicts.advice(summary), **summary}


def latency_ok(summary: dict) -> bool:
    """send→msg p99 of the steady window within the bound (--p99-ms); True without either."""
    bound, p99 = summary.get("p99_bound_ms"), summary["steady"]["e2e_ms"]["p99"]
    return bound is None or p99 is None or p99 <= bound


def knee_figures(knee: dict, totals: dict) -> dict:
    """The knee steps with their rates recounted from the final per-second counts."""
    steps = []
    for step in knee.get("steps", []):
        if step.get("start") and step.get("end"):
            fig = window_figures(totals, 0, (step["start"], step["end"]), totals)
            step = {**step, "msgs_in_per_s": fig["msgs_in_per_s"], "deliveries_per_s": fig["deliveries_per_s"]}
        steps.append(step)
    return {**knee, "steps": steps}


def verdict(summary: dict, results: dict) -> tuple[str, list[str]]:
    reasons = [results["failed"]] if results.get("failed") else []
    if summary["correctness"]["errors"]:
        reasons.append(f"{summary['correctness']['errors']} correctness errors")
    if not results.get("steady"):
        reasons.append("the run never reached its steady window")
    elif results["steady"].get("partial"):
        reasons.append("the run was stopped before its steady window ended")
    if not summary["total"]["deliveries"] and results.get("scenario") != "none":
        reasons.append("nothing was delivered")
    return ("fail" if reasons else "pass"), reasons
