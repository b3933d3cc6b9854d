"""The loadtest report arithmetic (tools/load/report.py) and the load users' seq check
(tools/load/seqcheck.py): pure logic, no Locust run."""
import math

import pytest

from tools.load import report as lr
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


@pytest.mark.parametrize("first", [5, 1])
def test_seqcheck_without_base_starts_at_the_first_msg(first):
    c = SeqCheck()
    assert c.on_msg("r:new", first) is None
    assert c.on_msg("r:new", first + 1) is None
    assert c.finish() == 0
