"""The arithmetic of ``zonechat loadtest`` reports: stats windows, percentiles, the summary.

No I/O and no Locust import: the locustfile snapshots Locust's stats entries into plain
dicts (``snapshot``), the command turns the run's ``results.json`` and its process
samples into ``summary.json`` / ``summary.md`` (``summarize``, ``render_markdown``).

A snapshot maps ``"<type> <name>"`` to ``{type, name, n, fail, max, rt}`` where ``rt`` is
Locust's response-time histogram (milliseconds, rounded as Locust rounds them, -> count).
"""
from __future__ import annotations

import math

REQ, CHECK, INFO, ADMIN = "zc", "check", "info", "admin"
ACK = "send→ack"
E2E = ("send→msg", "sys→msg")          # deliveries timed end to end from the sender's ts
REPLAY = "replay→msg"                   # offline messages pushed after a login
LOGINS = ("login", "relogin")
BROADCAST = "broadcast"
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


def window_figures(snap: dict, seconds: float, span: tuple | None = None, totals: dict | None = None) -> dict:
    """Counts, rates and latencies of a window; with ``span`` (t0, t1) the counts are taken
    from the per-second counts (of ``totals``, a later snapshot, if given) in those whole
    seconds (see count_between)."""
    if span:
        src = totals or snap
        n_in, n_out = count_between(in_entries(src), *span), count_between(out_entries(src), *span)
        seconds = int(span[1]) - int(span[0])
    else:
        n_in, n_out = msgs_in(snap), deliveries(snap)
    return {"seconds": round(seconds, 1), "msgs_in": n_in, "deliveries": n_out,
            "msgs_in_per_s": rate(n_in, seconds), "deliveries_per_s": rate(n_out, seconds),
            "ack_ms": latency(snap, ACK), "e2e_ms": latency(snap, E2E)}


def summarize(results: dict, procs: dict, meta: dict) -> dict:
    """The summary of one run: ``results.json`` of the locustfile plus the process samples."""
    total, steady = results.get("total") or {}, results.get("steady") or {}
    s_snap = steady.get("stats") or {}
    t_snap = total.get("stats") or {}
    start, end = steady.get("start"), steady.get("end")
    checks = correctness(t_snap)
    summary = {**meta, "scenario": results.get("scenario"), "users": results.get("users"),
               "rate_target": results.get("rate"),
               "steady": {"users": steady.get("users"),
                          **window_figures(s_snap, 0, (start, end) if start and end else None, t_snap)},
               "total": {**window_figures(t_snap, (results.get("ended_at") or 0) - (results.get("started_at") or 0)),
                         "login_ms": latency(t_snap, LOGINS), "replayed": ok_count(t_snap, REPLAY),
                         "redelivered": ok_count(t_snap, "redelivered", INFO)},
               "errors": errors_by_code(total.get("errors") or []),
               "correctness": {"counters": checks, "errors": sum(checks.values())},
               "processes": process_table(procs.get("cluster", {}), start, end),
               "generator": process_table(procs.get("generator", {}), start, end)}
    if results.get("knee"):
        summary["knee"] = knee_figures(results["knee"], t_snap)
    summary["cluster_cpu_avg"] = round(sum(p["cpu_avg"] for p in summary["processes"]), 1)
    summary["generator_cpu_avg"] = round(sum(p["cpu_avg"] for p in summary["generator"]), 1)
    summary["verdict"], summary["reasons"] = verdict(summary, results)
    return summary


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


def _ms(value) -> str:
    return "-" if value is None else f"{value:g}"


def _lat_row(label: str, lat: dict) -> str:
    return (f"| {label} | {lat['count']:,} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['p99'])} "
            f"| {_ms(lat['max'])} | {lat['failures']:,} |")


def render_markdown(s: dict) -> str:
    """summary.md: the figures first, then errors, correctness and processes."""
    st, tot = s["steady"], s["total"]
    lines = [f"# zonechat loadtest {s['scenario']}: {s['verdict'].upper()}", "",
             f"{s.get('command', '')}", "",
             f"- machine: {s.get('cores')} cores, load average {s.get('loadavg_start')} at start, "
             f"{s.get('loadavg_end')} at end; {s.get('workers')} Locust worker process(es)",
             f"- users: {s['users']} (steady window: {st['users']} users for {st['seconds']} s); "
             f"target rate {s['rate_target']} msgs/s in",
             f"- steady: **{st['msgs_in_per_s']:,} msgs/s in, {st['deliveries_per_s']:,} deliveries/s out** "
             f"({st['msgs_in']:,} in, {st['deliveries']:,} out)",
             f"- whole run: {tot['msgs_in']:,} in, {tot['deliveries']:,} out, {tot['replayed']:,} replayed "
             f"after logins, {tot['redelivered']:,} redelivered",
             f"- cluster CPU (sum of processes, mean over the steady window): {s['cluster_cpu_avg']}%; "
             f"load generator: {s['generator_cpu_avg']}%", "",
             "| latency (ms) | count | p50 | p95 | p99 | max | failures |", "|---|---|---|---|---|---|---|",
             _lat_row("send→ack (steady)", st["ack_ms"]), _lat_row("send→msg end to end (steady)", st["e2e_ms"]),
             _lat_row("send→ack (whole run)", tot["ack_ms"]), _lat_row("send→msg (whole run)", tot["e2e_ms"]),
             _lat_row("login (whole run)", tot["login_ms"]), ""]
    lines += ["## Errors by code", ""] + ([f"- {k}: {v:,}" for k, v in s["errors"].items()] or ["- none"])
    lines += ["", f"## Correctness: {s['correctness']['errors']} errors", ""]
    lines += [f"- {k}: {v}" for k, v in s["correctness"]["counters"].items()]
    lines += _process_lines("Cluster processes", s["processes"]) + _process_lines("Load generator", s["generator"])
    if s.get("knee"):
        lines += _knee_lines(s["knee"])
    if s["reasons"]:
        lines += ["", "## Why it failed", ""] + [f"- {r}" for r in s["reasons"]]
    return "\n".join(lines) + "\n"


def _process_lines(title: str, rows: list[dict]) -> list[str]:
    out = ["", f"## {title}", "", "| process | pid | CPU% mean | CPU% max | RSS MiB max | RSS MiB last |",
           "|---|---|---|---|---|---|"]
    out += [f"| {r['name']} | {r['pid']} | {r['cpu_avg']} | {r['cpu_max']} | {r['rss_mb_max']} | {r['rss_mb_last']} |"
            for r in rows]
    return out


def _knee_lines(knee: dict) -> list[str]:
    out = ["", f"## Knee: {knee.get('knee_users')} users ({knee.get('why', '')})", "",
           "| users | msgs/s in | deliveries/s | e2e p50 | e2e p99 | failures |", "|---|---|---|---|---|---|"]
    for step in knee.get("steps", []):
        out.append(f"| {step['users']} | {step['msgs_in_per_s']} | {step['deliveries_per_s']} | "
                   f"{_ms(step['e2e_ms']['p50'])} | {_ms(step['e2e_ms']['p99'])} | {step['failures']} |")
    return out
