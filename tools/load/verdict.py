"""The words of a load run's summary: the verdict line, the advice, labelled figures, notes.

Pure functions of the summary dict that ``report.summarize`` builds; summary.md, the
command's output and summary.html all take their words from here, so every figure has one
label. The verdict answers "how many players?" in one line:

    verdict: the cluster held N users of SCENARIO at X msgs/s in, Y deliveries/s out,
             send→msg p99 Z ms, cluster CPU C cores of K

or says why it cannot (correctness failed, latency over its bound, no steady window).
"""
from __future__ import annotations

DEFAULT_P99_MS = 250.0
DEFAULT_CONFIG = "config.yaml"
BUSY_GENERATOR = 85.0        # % of one core: above it the generator's own queueing shows in latencies


def num(x) -> str:
    """A figure for people: thousands separated, at most 2 decimals, no trailing zeros."""
    if x is None:
        return "-"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.2f}".rstrip("0").rstrip(".") if abs(x) < 10 else f"{x:,.1f}".rstrip("0").rstrip(".")


def cores(cpu_percent) -> str:
    """Cores from a CPU% (100 = one core)."""
    return num(round((cpu_percent or 0.0) / 100.0, 2))


def e2e_label(s: dict) -> str:
    return "sys→msg" if s.get("scenario") == "broadcast" else "send→msg"


def held(s: dict) -> bool:
    knee = s.get("knee")
    return not s["reasons"] and s.get("latency_ok", True) and not (knee and not knee.get("knee_users"))


def _figures_text(s: dict) -> str:
    st = s["steady"]
    return (f"{num(st['msgs_in_per_s'])} msgs/s in, {num(st['deliveries_per_s'])} deliveries/s out, "
            f"{e2e_label(s)} p99 {num(st['e2e_ms']['p99'])} ms, "
            f"cluster CPU {cores(s.get('cluster_cpu_avg'))} cores of {s.get('cores') or '?'}")


def _why(s: dict) -> str:
    """The failure reasons, a correctness count with its counters."""
    bad = {k: v for k, v in s["correctness"]["counters"].items() if v}
    detail = ", ".join(f"{k} {v:,}" for k, v in bad.items())
    out = [f"{r} ({detail}: messages lost, duplicated or out of order, or users kicked)"
           if r.endswith("correctness errors") and detail else r for r in s["reasons"]]
    return "; ".join(out)


def line(s: dict) -> str:
    """The one-line verdict."""
    n, sc, knee = s.get("held_users"), s.get("scenario"), s.get("knee")
    who = f"{n:,} users" if n else f"{s.get('users') or 0:,} users asked"
    if s["reasons"]:
        return f"verdict: FAILED with {who} of {sc}: {_why(s)}; {_figures_text(s)}"
    if knee and not knee.get("knee_users"):
        return f"verdict: the cluster did not hold even the first step, {who} of {sc}: {knee.get('why')}; " \
               f"{_figures_text(s)}"
    if not s.get("latency_ok", True):
        return (f"verdict: the cluster did not hold {who} of {sc} within the latency bound: {e2e_label(s)} p99 "
                f"{num(s['steady']['e2e_ms']['p99'])} ms is over {num(s.get('p99_bound_ms'))} ms (--p99-ms); "
                f"{_figures_text(s)}")
    text = f"verdict: the cluster held {who} of {sc} at {_figures_text(s)}"
    return text + (f" (knee search: {knee.get('why')})" if knee else "")


def knee_command(s: dict, users: int, rate: float) -> str:
    opts = s.get("options") or {}
    parts = ["zonechat loadtest", str(s.get("scenario")), f"--users {users}", f"--rate {rate:g}", "--knee"]
    bound = s.get("p99_bound_ms")
    if bound is not None and bound != DEFAULT_P99_MS:
        parts.append(f"--p99-ms {bound:g}")
    if opts.get("workers"):
        parts.append(f"--workers {opts['workers']}")
    if opts.get("config") and opts["config"] != DEFAULT_CONFIG:
        parts.append(f"-c {opts['config']}")
    return " ".join(parts)


def advice(s: dict) -> str | None:
    """How to find the most players it holds: a knee search from here (None after one that
    found its knee). Twice the users when this run held, keeping each user's send rate."""
    rate, users = s.get("rate_target") or 0.0, s.get("held_users") or s.get("users") or 1
    scale = 1.0 if s.get("scenario") == "broadcast" else 2.0     # broadcasts do not grow with users
    knee = s.get("knee")
    if knee:
        if knee.get("knee_users") and knee["knee_users"] >= (s.get("users") or 0) and not s["reasons"]:
            return "no knee up to here; to search higher: " + knee_command(s, 2 * s["users"], rate * scale)
        return None
    if held(s):
        return "to find the most players it holds: " + knee_command(s, 2 * users, rate * scale)
    return "to find the most players it holds: " + knee_command(s, s.get("users") or users, rate)


# -- labelled figures --------------------------------------------------------------------------
def _loadavg(values) -> str:
    return " / ".join(num(v) for v in values) if values else "-"


def _lat(lat: dict, keys=("p50", "p95", "p99", "max")) -> str:
    return " / ".join(num(lat.get(k)) for k in keys)


def figures(s: dict) -> list[tuple[str, str]]:
    """(label, value) of the key figures, every one named in words."""
    st, tot = s["steady"], s["total"]
    per_msg = st["deliveries"] / st["msgs_in"] if st.get("msgs_in") else None
    gen_workers = s.get("workers") or s.get("locust_workers") or 1
    gen = f"{cores(s.get('generator_cpu_avg'))} cores" if s.get("generator") else "- (not sampled)"
    return [
        ("users held: the fewest load users logged in at any second of the steady window", num(s.get("held_users"))),
        ("users asked (--users; a knee step's users for a knee search)", num(st.get("users"))),
        ("steady window: whole seconds counted once every user was logged in (--duration, rounded out to "
         "whole seconds)", num(st.get("seconds"))),
        ("msgs/s in: messages stored per second (acked sends + accepted broadcasts)", num(st["msgs_in_per_s"])),
        ("deliveries/s out: msg pushes the load users read per second", num(st["deliveries_per_s"])),
        ("deliveries per message in (out ÷ in)", num(round(per_msg, 2)) if per_msg is not None else "-"),
        (f"{e2e_label(s)} end to end, ms (sender's clock → receiver reads it): p50 / p95 / p99 / max",
         _lat(st["e2e_ms"])),
        ("latency bound for the verdict (--p99-ms), ms", num(s.get("p99_bound_ms"))),
        ("send→ack, ms (send → its durable ack): p50 / p95 / p99 / max", _lat(st["ack_ms"])),
        ("login by token, ms, whole run (connect + login → welcome): p50 / p99", _lat(tot["login_ms"], ("p50", "p99"))),
        ("cluster CPU: cores busy, mean over the steady window, all its processes",
         f"{cores(s.get('cluster_cpu_avg'))} cores of {s.get('cores') or '?'}"),
        (f"load generator CPU: cores busy, mean over the steady window ({gen_workers} Locust "
         f"process{'es' if gen_workers > 1 else ''})", gen),
        ("failed calls, whole run (by code below)", num(sum(s.get("errors", {}).values()))),
        ("correctness errors: lost, duplicated or out-of-order messages, kicks", num(s["correctness"]["errors"])),
        ("machine load average (1 / 5 / 15 min) at start → end",
         f"{_loadavg(s.get('loadavg_start'))} → {_loadavg(s.get('loadavg_end'))}"),
    ]
