"""summary.html of a load run: zonechat's own page beside Locust's locust.html.

One self-contained file that works offline: the verdict line, the labelled figures and
notes (the words of ``verdict`` and ``notes``, as in summary.md), charts over time of
throughput, latency and CPU, errors by code, correctness counters, and per-process CPU
and RSS. The charts are drawn by uPlot (MIT, vendored in ``static/`` with its LICENSE)
and ``static/summary.js``, both inlined, from a JSON data block. A strict page: its
Content-Security-Policy allows nothing but these inline scripts and style, by hash; no
URL is loaded and no element has an inline event handler.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os

from tools.load import notes as notes_mod
from tools.load import verdict as verdicts
from tools.load.markdown import KNEE_HEADER, PROCESS_HEADER, status

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
SCRIPTS = ("uPlot.iife.min.js", "summary.js")
STYLES = ("uPlot.min.css", "summary.css")
CHARTS = (("chart-throughput", "Throughput over time: msgs/s in (right axis) and deliveries/s out (left)"),
          ("chart-latency", "Latency over time: end to end p50 / p99 and send→ack p99, ms"),
          ("chart-cpu", "CPU over time: cores busy, cluster and load generator; load users in the game (right)"))


def static_text(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as fh:
        return fh.read()


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(headers, rows, table_id: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def verdict_state(s: dict) -> str:
    if s["verdict"] != "pass":
        return "failed"
    return "held" if s.get("held", True) else "not-held"


def head_section(s: dict) -> str:
    advice = f'<p id="advice"><code>{esc(s["advice"])}</code></p>' if s.get("advice") else ""
    reasons = "".join(f"<li>{esc(r)}</li>" for r in s.get("reasons") or ())
    why = f'<ul id="reasons">{reasons}</ul>' if reasons else ""
    return (f'<header><h1>zonechat loadtest {esc(s.get("scenario"))}: {esc(status(s))}</h1>'
            f'<p id="command"><code>{esc(s.get("command", ""))}</code> · started {esc(s.get("started", ""))}</p></header>'
            f'<p id="verdict" data-state="{verdict_state(s)}">{esc(s["verdict_line"])}</p>{advice}{why}')


def figures_section(s: dict) -> str:
    notes = "".join(f"<li>{esc(n)}</li>" for n in notes_mod.notes(s))
    return (f'<section><h2>Figures (steady window)</h2>{table(("figure", "value"), verdicts.figures(s), "figures")}'
            f'</section><section><h2>What the numbers mean</h2><ul id="notes">{notes}</ul></section>')


def charts_section(s: dict) -> str:
    window = (s.get("series") or {}).get("latency_window_s")
    lag = f" Latencies are over the last {window:g} s at each progress sample." if window else ""
    figs = "".join(f'<figure class="chart"><figcaption>{esc(title)}</figcaption><div id="{cid}" class="plot"></div>'
                   f'</figure>' for cid, title in CHARTS)
    return (f'<section id="charts"><h2>Over time</h2><p class="hint">x: seconds since the run started; the '
            f'shaded band is the steady window (knee steps: purple bands).{esc(lag)}</p>{figs}</section>')


def tables_section(s: dict) -> str:
    errors = [(k, f"{v:,}") for k, v in (s.get("errors") or {}).items()] or [("none", "0")]
    checks = [(k, v) for k, v in s["correctness"]["counters"].items()]
    out = [f'<section><h2>Errors by code (whole run)</h2>{table(("call: code", "count"), errors, "errors")}</section>',
           f'<section><h2>Correctness: {s["correctness"]["errors"]} errors</h2>'
           f'{table(("counter", "count"), checks, "correctness")}</section>']
    for title, key in (("Cluster processes", "processes"), ("Load generator", "generator")):
        rows = [(r["name"], r["pid"], r["cpu_avg"], r["cpu_max"], r["rss_mb_max"], r["rss_mb_last"])
                for r in s.get(key) or ()]
        out.append(f'<section><h2>{title} (steady window; CPU 100% = one core busy)</h2>'
                   f'{table(PROCESS_HEADER, rows, key)}</section>')
    if s.get("knee"):
        out.append(knee_section(s["knee"]))
    return "".join(out)


def knee_section(knee: dict) -> str:
    rows = [(st["users"], st["msgs_in_per_s"], st["deliveries_per_s"], st["e2e_ms"]["p50"], st["e2e_ms"]["p99"],
             st["failures"]) for st in knee.get("steps", [])]
    return (f'<section><h2>Knee: {esc(knee.get("knee_users"))} users ({esc(knee.get("why", ""))})</h2>'
            f'{table(KNEE_HEADER, rows, "knee")}</section>')


def chart_data(s: dict) -> str:
    """The JSON block the charts read; ``<`` escaped so no text in it can end the block."""
    data = {**(s.get("series") or {}), "e2e_label": verdicts.e2e_label(s)}
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def render_html(s: dict) -> str:
    scripts = [static_text(name) for name in SCRIPTS]
    style = "\n".join(static_text(name) for name in STYLES)
    csp = (f"default-src 'none'; script-src {' '.join(csp_hash(t) for t in scripts)}; "
           f"style-src {csp_hash(style)}; img-src data:; base-uri 'none'; form-action 'none'")
    body = head_section(s) + figures_section(s) + charts_section(s) + tables_section(s)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>zonechat loadtest {esc(s.get('scenario'))}: {esc(status(s))}</title>"
            f"<style>{style}</style></head><body><main>{body}</main>"
            f'<script type="application/json" id="zc-data">{chart_data(s)}</script>'
            + "".join(f"<script>{t}</script>" for t in scripts) + "</body></html>\n")
