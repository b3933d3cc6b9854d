"""The loadtest report arithmetic (tools/load/report.py), its verdict line, labels and notes
(verdict.py, notes.py), time series (series.py) and HTML (htmlreport.py), from results.json
fixtures built here, and the load users' seq check (tools/load/seqcheck.py): pure logic,
no Locust run."""
import math
import re

import pytest

from tools.load import htmlreport, series
from tools.load import notes as notes_mod
from tools.load import report as lr
from tools.load import verdict as verdicts
from tools.load.seqcheck import SeqCheck


class Entry:                                       # what the snapshot reads of a Locust StatsEntry
    def __init__(self, method, name, times, fails=0, per_sec=None):
        self.method, self.name = method, name
        self.response_times = dict(times)
        self.num_failures = fails
        self.num_requests = sum(times.values()) + fails
        self.max_response_time = max(times, default=0)
        self.num_reqs_per_sec = dict(per_sec or {})
        self.num_fail_per_sec = {}


# -- percentiles ---------------------------------------------------------------------------
def test_percentile_is_nearest_rank_on_a_histogram():
    hist = {1: 50, 2: 40, 10: 9, 100: 1}           # 100 samples
    assert lr.percentile(hist, 50) == 1
    assert lr.percentile(hist, 51) == 2
    assert lr.percentile(hist, 90) == 2
    assert lr.percentile(hist, 95) == 10
    assert lr.percentile(hist, 99) == 10
    assert lr.percentile(hist, 99.5) == 100
    assert lr.percentile(hist, 100) == 100
    assert lr.percentile(hist, 0) == 1


def test_percentile_matches_sorted_samples_and_takes_json_keys():
    samples = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]
    hist = {}
    for s in samples:
        hist[str(s)] = hist.get(str(s), 0) + 1     # results.json turns keys into strings
    ordered = sorted(samples)
    for p in (10, 25, 50, 75, 90, 99):
        assert lr.percentile(hist, p) == ordered[max(1, math.ceil(p / 100 * len(samples))) - 1]


def test_percentile_of_nothing_is_none():
    assert lr.percentile({}, 99) is None
    assert lr.percentile({"5": 0}, 50) is None


# -- windows -------------------------------------------------------------------------------
def test_diff_is_the_window_between_two_snapshots():
    before = lr.snapshot([Entry("zc", "send→msg", {5: 10, 7: 2})])
    after = lr.snapshot([Entry("zc", "send→msg", {5: 12, 7: 2, 300: 1}, fails=1)])
    win = lr.diff(after, before)["zc send→msg"]
    assert win["n"] == 4 and win["fail"] == 1
    assert win["rt"] == {"5": 2, "300": 1}
    assert win["max"] == 300.0
    lat = lr.latency(lr.diff(after, before), "send→msg")
    assert lat["count"] == 3 and lat["p50"] == 5 and lat["p99"] == 300


def test_counts_between_use_whole_seconds_of_the_per_second_counts():
    snap = lr.snapshot([Entry("zc", "send→ack", {3: 6}, per_sec={100: 1, 101: 2, 102: 3}),
                        Entry("admin", "broadcast", {4: 1}, per_sec={101: 1}),
                        Entry("zc", "sys→msg", {9: 40}, per_sec={101: 20, 102: 20})])
    assert lr.count_between(lr.in_entries(snap), 101.0, 102.9) == 3   # seconds 101 only
    fig = lr.window_figures(snap, 0, (101.2, 103.0))
    assert fig["seconds"] == 2 and fig["msgs_in"] == 6 and fig["deliveries"] == 40
    assert fig["msgs_in_per_s"] == 3.0 and fig["deliveries_per_s"] == 20.0


def test_correctness_counts_only_check_failures_and_errors_group_by_code():
    snap = lr.snapshot([Entry("check", "seq.gap", {0: 0}, fails=2), Entry("info", "redelivered", {0: 3}),
                        Entry("zc", "send→ack", {2: 5}, fails=1)])
    counts = lr.correctness(snap)
    assert counts["seq.gap"] == 2 and sum(counts.values()) == 2
    errors = lr.errors_by_code([
        {"method": "zc", "name": "send→ack", "error": "rate_limited", "occurrences": 3},
        {"method": "zc", "name": "send→ack", "error": "rate_limited", "occurrences": 2},
        {"method": "check", "name": "seq.gap", "error": "seq.gap", "occurrences": 2}])
    assert errors == {"send→ack: rate_limited": 5}


def results(gap: int = 0) -> dict:
    ps = {str(s): 10 for s in range(1000, 1010)}
    out = {"type": "zc", "name": "send→msg", "n": 100, "fail": 0, "max": 20.0, "rt": {"5": 90, "20": 10},
           "ps": ps, "fps": {}}
    ack = {**out, "name": "send→ack", "rt": {"2": 100}, "max": 2.0}
    total = {"zc send→msg": out, "zc send→ack": ack}
    if gap:
        total["check seq.gap"] = {"type": "check", "name": "seq.gap", "n": gap, "fail": gap, "max": 0, "rt": {}}
    return {"scenario": "world", "users": 10, "rate": 10, "started_at": 998.0, "ended_at": 1012.0,
            "steady": {"users": 10, "start": 1000.0, "end": 1010.0, "stats": total},
            "total": {"stats": total, "errors": []}}


def test_summary_figures_processes_and_verdict():
    procs = {"cluster": {"gate1": {"role": "gate", "pid": 7, "samples": [
        [999.0, 90.0, 2**20], [1001.0, 10.0, 2 * 2**20], [1005.0, 30.0, 3 * 2**20]]}}, "generator": {}}
    s = lr.summarize(results(), procs, {"cores": 2})
    assert s["steady"]["msgs_in_per_s"] == 10.0 and s["steady"]["deliveries_per_s"] == 10.0
    assert s["steady"]["e2e_ms"]["p50"] == 5 and s["steady"]["e2e_ms"]["p99"] == 20
    assert s["correctness"]["errors"] == 0 and s["verdict"] == "pass"
    gate = s["processes"][0]
    assert gate["cpu_avg"] == 20.0 and gate["cpu_max"] == 30.0      # the steady window only
    assert gate["rss_mb_max"] == 3.0 and s["cluster_cpu_avg"] == 20.0
    text = lr.render_markdown(s)
    assert "PASS" in text and "| gate1 | 7 | 20.0 | 30.0 | 3.0 | 3.0 |" in text


def test_summary_fails_on_correctness_errors():
    s = lr.summarize(results(gap=3), {}, {})
    assert s["correctness"]["counters"]["seq.gap"] == 3
    assert s["verdict"] == "fail" and "3 correctness errors" in s["reasons"]


# -- the seq check ---------------------------------------------------------------------------
def test_seqcheck_passes_in_order_traffic_with_own_acks_in_any_order():
    c = SeqCheck()
    c.base("r:w", 10)
    assert c.on_msg("r:w", 11) is None
    c.on_ack("r:w", 13)                            # our own send, acked before 12 arrived
    assert c.on_msg("r:w", 12) is None
    assert c.on_msg("r:w", 14) is None
    assert c.sweep(now=100.0) == 0 and c.finish() == 0
    assert not c.counts


def test_seqcheck_flags_duplicates_and_out_of_order():
    c = SeqCheck()
    c.base("d:a:b", 0)
    assert [c.on_msg("d:a:b", s) for s in (1, 3, 3, 2, 1)] == [None, None, "dup", "out_of_order", "dup"]


def test_seqcheck_gap_needs_grace_and_no_unacked_own_send():
    c = SeqCheck(grace=5.0)
    c.base("r:w", 0)
    c.on_msg("r:w", 1)
    c.on_msg("r:w", 3)                             # 2 missing
    assert c.sweep(now=100.0) == 0                 # noticed
    assert c.sweep(now=104.0, sending={"r:w"}) == 0
    assert c.sweep(now=106.0) == 1                 # outlived the grace
    assert c.sweep(now=200.0) == 0                 # counted once
    assert c.counts["gap"] == 1


def test_seqcheck_finish_excuses_unacked_sends_and_a_late_fill_clears_the_suspect():
    c = SeqCheck()
    c.base("g:x", 0)
    for s in (1, 4, 5):
        c.on_msg("g:x", s)                         # 2 and 3 missing
    assert c.finish({"g:x": 1}) == 1
    c2 = SeqCheck(grace=5.0)
    c2.base("r:w", 0)
    c2.on_msg("r:w", 2)
    c2.sweep(now=0.0)
    assert c2.on_msg("r:w", 1) == "out_of_order"   # it came after all: not a gap
    assert c2.sweep(now=10.0) == 0 and c2.finish() == 0


def test_seqcheck_replay_after_a_new_session_is_redelivery_not_dup():
    c = SeqCheck()
    c.base("d:a:b", 0)
    for s in (1, 2, 3):
        c.on_msg("d:a:b", s)
    c.new_session()
    assert [c.on_msg("d:a:b", s) for s in (2, 3, 4)] == ["redelivered", "redelivered", None]
    assert c.on_msg("d:a:b", 3) == "dup"           # twice in one session is a failure
    assert c.counts == {"redelivered": 2, "dup": 1}


def test_seqcheck_first_login_replay_of_older_messages_is_earlier_not_redelivered():
    c = SeqCheck()
    c.new_session()                                # the first login
    c.base("d:a:b", 5)                             # welcome.convs: 5 messages predate this user
    assert [c.on_msg("d:a:b", s) for s in (4, 5, 6)] == ["earlier", "earlier", None]
    c.new_session()                                # a relogin: the same seqs again are redeliveries
    assert [c.on_msg("d:a:b", s) for s in (5, 6, 7)] == ["redelivered", "redelivered", None]
    assert c.counts == {"earlier": 2, "redelivered": 2} and c.finish() == 0


@pytest.mark.parametrize("first", [5, 1])
def test_seqcheck_without_base_starts_at_the_first_msg(first):
    c = SeqCheck()
    assert c.on_msg("r:new", first) is None
    assert c.on_msg("r:new", first + 1) is None
    assert c.finish() == 0


# -- the verdict, its advice and the labels (tools/load/verdict.py, notes.py) ------------------
SECONDS = range(1000, 1010)                        # the steady window of run() below


def entry(kind, name, per_sec, rt=None, fails=0) -> dict:
    """A results.json stats entry: per-second counts, a histogram (default: all at 5 ms)."""
    n = sum(per_sec.values())
    return {"type": kind, "name": name, "n": n, "fail": fails, "max": max(map(float, rt or {"5": 1})),
            "rt": rt if rt is not None else {"5": n}, "ps": {str(s): c for s, c in per_sec.items()}, "fps": {}}


def run(scenario="world", users=10, per_user_out=9, extra=(), outs=None, p99_ms=250.0, knee=None) -> dict:
    """A results.json of ``users`` load users, 10 msgs/s in, for 10 steady seconds (1000-1010)."""
    n_out = 10 * per_user_out
    stats = [entry("zc", "send→ack", {s: 10 for s in SECONDS}, {"2": 100}),
             entry("zc", "send→msg", {s: n_out for s in SECONDS}, {"5": 9 * n_out, "20": n_out}),
             entry("zc", "login", {999: users}, {"30": users}),
             entry("info", "user in", {999: users}), entry("info", "session open", {999: users}),
             *extra]
    if outs:
        stats += [entry("info", "user out", outs), entry("info", "session closed", outs)]
    snap = {f"{e['type']} {e['name']}": e for e in stats}
    res = {"scenario": scenario, "users": users, "rate": 10.0, "accounts": users + 2, "workers": 1, "fixed": 0,
           "p99_ms": p99_ms, "prefix": "lt", "room": "world", "guild_size": 20, "started_at": 990.0,
           "ended_at": 1012.0, "steady": {"users": users, "start": 1000.0, "end": 1010.0, "stats": snap},
           "total": {"stats": snap, "errors": []},
           "progress": [{"t": 990.0 + 2 * i, "e2e_p50": 5, "e2e_p99": 20, "ack_p99": 2} for i in range(11)]}
    if knee:
        res["knee"] = knee
    return res


CPU = {"cluster": {"gate1": {"role": "gate", "pid": 7, "samples": [[1001.0 + i, 20.0, 40 * 2**20] for i in range(8)]},
                   "zone1": {"role": "zone", "pid": 8, "samples": [[1001.0 + i, 10.0, 30 * 2**20] for i in range(8)]}},
       "generator": {"locust": {"role": "locust", "pid": 9, "samples": [[1001.0 + i, 45.0, 99 * 2**20] for i in range(8)]}}}
META = {"cores": 2, "workers": 1, "options": {"rate": None, "workers": None, "config": "config.yaml"}}


def test_verdict_line_of_a_run_that_held_and_its_knee_advice():
    s = lr.summarize(run(), CPU, META)
    assert list(s)[:2] == ["verdict_line", "advice"]           # summary.json starts with them
    assert s["verdict_line"] == ("verdict: the cluster held 10 users of world at 10 msgs/s in, 90 deliveries/s "
                                 "out, send→msg p99 20 ms, cluster CPU 0.3 cores of 2")
    # twice the users at the same per-user send rate: twice the total rate
    assert s["advice"] == "to find the most players it holds: zonechat loadtest world --users 20 --rate 20 --knee"
    text = lr.render_markdown(s)
    assert text.splitlines()[:2] == [s["verdict_line"], s["advice"]]
    assert s["held"] and s["held_users"] == 10 and s["latency_ok"]


def test_advice_keeps_the_flags_that_matter():
    meta = {**META, "options": {"rate": 10.0, "workers": 2, "config": "/tmp/x/config.yaml"}}
    s = lr.summarize(run(scenario="broadcast", p99_ms=50.0), CPU, meta)
    assert s["advice"] == ("to find the most players it holds: zonechat loadtest broadcast --users 20 --rate 10 "
                           "--knee --p99-ms 50 --workers 2 -c /tmp/x/config.yaml")   # broadcasts do not scale
    assert "sys→msg p99 20 ms" in s["verdict_line"]


def test_verdict_line_says_why_when_correctness_fails():
    gap = entry("check", "seq.gap", {1005: 3}, {}, fails=3)
    s = lr.summarize(run(extra=[gap]), CPU, META)
    assert s["verdict"] == "fail" and not s["held"]
    assert s["verdict_line"].startswith("verdict: FAILED with 10 users of world: 3 correctness errors (seq.gap 3: "
                                        "messages lost, duplicated or out of order, or users kicked); 10 msgs/s in")
    assert lr.render_markdown(s).splitlines()[0] == s["verdict_line"]


def test_verdict_line_says_when_latency_passed_its_bound():
    s = lr.summarize(run(p99_ms=10.0), CPU, META)
    assert s["verdict"] == "pass" and not s["latency_ok"] and not s["held"]
    assert s["verdict_line"].startswith("verdict: the cluster did not hold 10 users of world within the latency "
                                        "bound: send→msg p99 20 ms is over 10 ms (--p99-ms); ")
    assert s["advice"].endswith("zonechat loadtest world --users 10 --rate 10 --knee --p99-ms 10")
    assert "PASS (correct), but latency over its bound" in lr.render_markdown(s)


def test_users_held_are_those_in_the_game_through_the_window_and_the_rest_is_explained():
    s = lr.summarize(run(outs={1004: 1}), CPU, META)           # one user stopped mid-window
    assert s["held_users"] == 9
    assert s["steady"]["logged_in"]["users"] == {"min": 9, "max": 10, "mean": 9.4}
    assert "held 9 users of world" in s["verdict_line"]
    notes = notes_mod.notes(s)
    assert notes[0] == ("users: 10 asked; 9 held, the fewest load users logged in at any second of the steady "
                        "window (most: 10)")
    assert notes[1].startswith("1 of the users asked were not logged in for the whole window")
    # the accounts beyond the users asked: one spare per worker, one to pair DMs
    assert any(n.startswith("load accounts: 12 (lt0 to lt11) for 10 users: 1 spare per Locust worker process")
               and "1 more to make an even number, so that every DM user k has its partner k^1" in n for n in notes)


def test_deliveries_beyond_the_fan_out_are_explained_by_the_replay_and_the_cut_sends():
    replay = entry("zc", "replay→msg", {1003: 6})
    again, earlier = entry("info", "redelivered", {1003: 3}), entry("info", "earlier msg", {1003: 2})
    cut = entry("info", "send cut", {1011: 7})                 # at the stop, after the window
    s = lr.summarize(run(scenario="dm", per_user_out=1, extra=[replay, again, earlier, cut]), CPU, META)
    st, tot = s["steady"], s["total"]
    assert (st["live"], st["replayed"], st["redelivered"], st["earlier"], st["cut"]) == (100, 6, 3, 2, 0)
    assert st["deliveries"] == 106 and st["msgs_in"] == 100 and tot["cut"] == 7
    text = "\n".join(notes_mod.notes(s))
    assert "each direct message reaches its one recipient, the sender's partner: 1 delivery" in text
    assert "steady window: live deliveries per message in = 1 (100 live + 6 by the offline replay" in text
    assert ("in the steady window, 6 deliveries came from the offline replay after a login: 1 stored while "
            "their recipient was logged out or not yet logged in; 2 left unread by an earlier run") in text
    assert "; 3 pushed again (at-least-once: delivered before" in text
    assert ("whole run: 100 in, 106 out; 7 sends were cut short when Locust stopped the users at the end: "
            "counted nowhere as in, yet stored and delivered") in text


def test_cpu_is_labelled_in_cores_and_per_process_in_percent_of_one_core():
    s = lr.summarize(run(), CPU, META)
    figures = dict(verdicts.figures(s))
    assert figures["cluster CPU: cores busy, mean over the steady window, all its processes"] == "0.3 cores of 2"
    assert figures["load generator CPU: cores busy, mean over the steady window (1 Locust process)"] == "0.45 cores"
    text = lr.render_markdown(s)
    assert "| process | pid | CPU % of one core, mean | CPU % of one core, max | RSS MiB, max | RSS MiB, last |" in text
    assert "| gate1 | 7 | 20.0 | 20.0 | 40.0 | 40.0 |" in text
    assert "cluster CPU: 0.3 cores of the machine's 2" in text


def test_every_figure_has_a_label_in_words():
    s = lr.summarize(run(), CPU, META)
    for label, value in verdicts.figures(s):
        assert len(label.split()) >= 3 and value not in ("", None), (label, value)


def test_knee_run_verdict_names_the_knee_and_advises_only_past_it():
    steps = [{"users": 5, "start": 990.0, "end": 1000.0, "e2e_ms": {"p50": 5, "p99": 20}, "failures": 0},
             {"users": 10, "start": 1000.0, "end": 1010.0, "e2e_ms": {"p50": 5, "p99": 20}, "failures": 0}]
    found = {"steps": steps, "knee_users": 10, "why": "no knee up to 10 users", "p99_ms": 250.0}
    s = lr.summarize(run(knee=found), CPU, META)
    assert s["verdict_line"].endswith("cluster CPU 0.3 cores of 2 (knee search: no knee up to 10 users)")
    assert s["advice"].startswith("no knee up to here; to search higher: zonechat loadtest world --users 20")
    broke = {**found, "knee_users": 5, "why": "at 10 users: e2e p99 900 ms (limit 250), 0 failures"}
    s = lr.summarize(run(knee=broke), CPU, META)
    assert s["advice"] is None and "(knee search: at 10 users" in s["verdict_line"]
    none = {**found, "knee_users": 0, "why": "at 5 users: e2e p99 900 ms (limit 250), 0 failures"}
    s = lr.summarize(run(knee=none), CPU, META)
    assert s["verdict_line"].startswith("verdict: the cluster did not hold even the first step")


def test_time_series_are_per_two_seconds_and_bounded():
    s = lr.summarize(run(), CPU, META)
    thr, lat, cpu = s["series"]["throughput"], s["series"]["latency"], s["series"]["cpu"]
    assert thr["bin_s"] == 2 and thr["t"][:3] == [2.0, 4.0, 6.0]
    assert thr["in"][5:10] == [10.0] * 5 and thr["out"][5:10] == [90.0] * 5     # seconds 1000-1009
    assert thr["users"][-1] == 10 and lat["e2e_p99"][0] == 20
    assert max(c for c in cpu["cluster"] if c is not None) == 0.3 and s["series"]["steady"] == [10.0, 20.0]
    long_ps = {s: 1 for s in range(0, 36000)}                # a 10-hour run: wider bins, never > 900 points
    big = series.throughput(long_ps, long_ps, ({0: 5}, {}), 0.0, 36000.0)
    assert len(big["t"]) <= series.MAX_POINTS and big["bin_s"] == 40 and big["in"][0] == 1.0
    assert len(series.latency([{"t": float(i)} for i in range(5000)], 0.0)["t"]) <= series.MAX_POINTS


def test_summary_html_is_self_contained_and_strict():
    s = lr.summarize(run(), CPU, META)
    page = htmlreport.render_html(s)
    assert s["verdict_line"] in page and 'id="chart-latency"' in page and 'id="chart-throughput"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)       # nothing to fetch
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", page, re.I)                              # no inline handlers
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "unsafe" not in csp
    for script in re.findall(r"<script>(.*?)</script>", page, re.S):                      # every script by hash
        assert htmlreport.csp_hash(script) in csp
    assert "uPlot" in page and "</script" not in htmlreport.chart_data({**s, "command": "</script>"})
