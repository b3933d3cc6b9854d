"""summary.md of a load run: the verdict line first, then labelled figures, notes, tables.

Renders the summary dict of ``report.summarize``; the words come from ``verdict`` and
``notes``, shared with summary.html (``htmlreport``).
"""
from __future__ import annotations

from tools.load import notes as notes_mod
from tools.load import verdict as verdicts


def _ms(value) -> str:
    return "-" if value is None else f"{value:g}"


def _lat_row(label: str, lat: dict) -> str:
    return (f"| {label} | {lat['count']:,} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['p99'])} "
            f"| {_ms(lat['max'])} | {lat['failures']:,} |")


def status(s: dict) -> str:
    """The title's word: PASS (correct and within the latency bound), FAIL, or why not held."""
    if s["verdict"] != "pass":
        return "FAIL"
    return "PASS" if s.get("latency_ok", True) else "PASS (correct), but latency over its bound"


def render_markdown(s: dict) -> str:
    """summary.md: the verdict line first, then the figures, notes, errors, correctness, processes."""
    st, tot = s["steady"], s["total"]
    lines = [s["verdict_line"]] + ([s["advice"]] if s.get("advice") else [])
    lines += ["", f"# zonechat loadtest {s['scenario']}: {status(s)}", "", f"{s.get('command', '')}", "",
              "| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in verdicts.figures(s)]
    lines += ["", "## What the numbers mean", ""] + [f"- {n}" for n in notes_mod.notes(s)]
    lines += ["", "## Latency", "", "| latency (ms) | count | p50 | p95 | p99 | max | failures |",
              "|---|---|---|---|---|---|---|",
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


PROCESS_HEADER = ("process", "pid", "CPU % of one core, mean", "CPU % of one core, max", "RSS MiB, max",
                  "RSS MiB, last")


def _process_lines(title: str, rows: list[dict]) -> list[str]:
    out = ["", f"## {title} (steady window; 100% = one core busy)", "",
           "| " + " | ".join(PROCESS_HEADER) + " |", "|---|---|---|---|---|---|"]
    out += [f"| {r['name']} | {r['pid']} | {r['cpu_avg']} | {r['cpu_max']} | {r['rss_mb_max']} | {r['rss_mb_last']} |"
            for r in rows]
    return out


KNEE_HEADER = ("users", "msgs/s in", "deliveries/s out", "send→msg p50 ms", "send→msg p99 ms", "failures")


def _knee_lines(knee: dict) -> list[str]:
    out = ["", f"## Knee: {knee.get('knee_users')} users ({knee.get('why', '')})", "",
           "| " + " | ".join(KNEE_HEADER) + " |", "|---|---|---|---|---|---|"]
    for step in knee.get("steps", []):
        out.append(f"| {step['users']} | {step['msgs_in_per_s']} | {step['deliveries_per_s']} | "
                   f"{_ms(step['e2e_ms']['p50'])} | {_ms(step['e2e_ms']['p99'])} | {step['failures']} |")
    return out
