"""center/ops.py without a cluster: rates from successive reports, one report per known
node, the last admin actions bounded, newest first and readably named; the history's pure
parts (center/ops_history.py): p99 from ack buckets, counter resets, fixed bounds, gaps."""
import pytest
from types import SimpleNamespace

from center.ops import ACTIONS_KEPT, ARGS_SHOWN, Ops, ack_view, proc_view, rates
from center.ops_actions import describe, duration
from center.ops_history import (HISTORY_SECONDS, SERIES, History, bucket_deltas, counter_delta,
                                merge, quantile)
from cluster.envelopes import Stats
from cluster.metrics import ACK_BOUNDS, Buckets

NODES = {"gate": ["gate1", "gate2"], "zone": ["zone1"], "dc": ["dc1"]}


def fake_center():
    config = SimpleNamespace(nodes_of=lambda role: [SimpleNamespace(name=n) for n in NODES.get(role, [])])
    return SimpleNamespace(config=config, snapshot=lambda: {"node": "center1", "online": 0})


def proc(cpu_s, started_at=100.0, restarts=0):
    return {"cpu_s": cpu_s, "rss": 50 << 20, "fds": 12, "started_at": started_at, "restarts": restarts}


# -- rates and a node's process ----------------------------------------------------------
def test_rates_between_two_reports():
    assert rates(None, {"t": 10.0, "frames_in": 5}) == {"in_per_s": None}
    assert rates({"t": 10.0, "frames_in": 5}, {"t": 12.0, "frames_in": 25}) == {"in_per_s": 10.0}
    # the node restarted: its counter starts again from zero
    assert rates({"t": 10.0, "stored": 500}, {"t": 11.0, "stored": 7}) == {"stored_per_s": 7.0}
    assert rates({"t": 10.0, "stored": 1}, {"t": 10.0, "stored": 2}) == {"stored_per_s": None}


def test_error_maps_are_summed_and_a_new_process_counts_from_zero():
    prev = {"t": 10.0, "errors": {"muted": 3, "rate_limited": 1}, "deliveries": 40, "proc": proc(1.0)}
    cur = {"t": 11.0, "errors": {"muted": 5, "rate_limited": 2}, "deliveries": 50, "proc": proc(1.5)}
    assert rates(prev, cur) == {"errors_per_s": 3.0, "deliveries_per_s": 10.0}
    # restarted between the two reports and already past the old counts: the start time tells
    again = {"t": 11.0, "errors": {"muted": 9}, "deliveries": 60, "proc": proc(0.2, started_at=110.5)}
    assert rates(prev, again) == {"errors_per_s": 9.0, "deliveries_per_s": 60.0}


def test_proc_view_cpu_percent_memory_uptime_restarts():
    prev = {"t": 200.0, "proc": proc(10.0)}
    cur = {"t": 202.0, "proc": proc(10.5, restarts=2)}
    assert proc_view(prev, cur) == {"cpu_pct": 25.0, "rss": 50 << 20, "fds": 12, "uptime_s": 102,
                                    "restarts": 2}
    assert proc_view(None, cur)["cpu_pct"] is None
    assert proc_view(prev, {"t": 202.0}) == {}              # an old node without proc
    restarted = {"t": 202.0, "proc": proc(0.4, started_at=201.0)}
    assert proc_view(prev, restarted)["cpu_pct"] == 20.0     # its own CPU since it started


# -- p99 from ack buckets ----------------------------------------------------------------
def test_quantile_interpolates_within_the_bucket_like_prometheus():
    bounds = (0.01, 0.1, 1.0)
    assert quantile(0.99, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.99, bounds, None) is None
    # 100 in (0.01, 0.1]: rank 99 of 100 -> 0.01 + 0.09 * 99/100
    assert quantile(0.99, bounds, [0, 100, 0, 0]) == pytest.approx(0.0991)
    # the first bucket starts at 0
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.005)
    # 98 fast, 2 slow: the 99th falls in the (0.1, 1.0] bucket, halfway through its 2
    assert quantile(0.99, bounds, [98, 0, 2, 0]) == pytest.approx(0.1 + 0.9 * 0.5)
    # above the last bound: the last bound (what histogram_quantile answers)
    assert quantile(0.99, bounds, [1, 0, 0, 99]) == 1.0


def test_quantile_matches_observations_through_real_buckets():
    b = Buckets(ACK_BOUNDS)
    for k in range(1000):
        b.observe(0.002 if k < 980 else 0.2)
    p99 = quantile(0.99, ACK_BOUNDS, b.counts)
    assert 0.1 < p99 <= 0.25


def test_bucket_deltas_and_counter_resets():
    assert bucket_deltas([1, 2, 3], [2, 2, 7]) == [1, 0, 4]
    assert bucket_deltas(None, [2, 2, 7]) == [2, 2, 7]
    assert bucket_deltas([5, 2, 3], [1, 0, 0]) == [1, 0, 0]        # went down: restarted
    assert bucket_deltas([1, 2, 3], [2, 3, 4], restarted=True) == [2, 3, 4]
    assert bucket_deltas([1, 2], [1, 2, 3]) == [1, 2, 3]           # a new bucket layout
    assert counter_delta(10, 15) == 5 and counter_delta(10, 4) == 4
    assert counter_delta(10, 15, restarted=True) == 15
    assert merge([[1, 2], None, [3, 4]]) == [4, 6] and merge([]) is None


def test_ack_view_uses_the_last_interval_only():
    first = {"t": 1.0, "ack_counts": [100, 0, 0]}
    assert ack_view(None, first) == {"ack_delta": None, "ack_p99_ms": None}
    later = {"t": 2.0, "ack_counts": [100, 10, 0]}
    view = ack_view(first, later)
    assert view["ack_delta"] == [0, 10, 0]
    assert view["ack_p99_ms"] == pytest.approx(round((0.001 + 0.0015 * 0.99) * 1000, 1))
    assert ack_view(first, {"t": 2.0}) == {}


# -- the history -------------------------------------------------------------------------
def test_history_one_row_a_second_bounded():
    h = History(seconds=5)
    for k in range(12):
        h.add(1000 + k + 0.3, {"msgs_per_s": k})
        h.add(1000 + k + 0.7, {"msgs_per_s": -1})                # same second: ignored
    cols, whole = h.columns()
    assert whole
    assert cols["t"] == [1007, 1008, 1009, 1010, 1011]
    assert cols["msgs_per_s"] == [7, 8, 9, 10, 11]
    assert set(cols) == {"t", *SERIES} and len(h.rows) == 5
    assert History().rows.maxlen == HISTORY_SECONDS == 900


def test_history_gaps_are_none_and_a_long_gap_keeps_the_bound():
    h = History(seconds=5)
    h.add(100.0, {"sessions": 3})
    h.add(103.2, {"sessions": 4})
    assert h.columns()[0]["t"] == [100, 101, 102, 103]
    assert h.columns()[0]["sessions"] == [3, None, None, 4]
    h.add(10_000.0, {"sessions": 5})                            # hours later: only the bound
    assert h.columns()[0]["t"] == [9996, 9997, 9998, 9999, 10000]
    h.add(9_000.0, {"sessions": 6})                             # the clock stepped back
    assert h.columns()[0]["t"] == [9000] and h.columns()[0]["sessions"] == [6]
    assert History().columns() == ({name: [] for name in ("t", *SERIES)}, True)


def test_history_since_the_pages_newest_second_sends_only_what_is_new():
    h = History(seconds=5)
    for k in range(8):
        h.add(200 + k, {"sessions": k})                          # kept: 203..207
    cols, whole = h.columns(since=205)
    assert not whole and cols["t"] == [206, 207] and cols["sessions"] == [6, 7]
    assert h.columns(since=207) == ({name: [] for name in ("t", *SERIES)}, False)   # nothing new
    for since in (202, 208, 10):                                 # not kept (too old, ahead, a restart)
        cols, whole = h.columns(since=since)
        assert whole and cols["t"] == [203, 204, 205, 206, 207], since
    assert History().columns(since=5)[1] is True


def gate_report(t, stored=None, deliveries=0, errors=0, acks=None, sessions=1, cpu=1.0):
    body = {"t": t, "sessions": sessions, "deliveries": deliveries, "errors": {"muted": errors},
            "frames_in": 0, "frames_out": 0, "proc": proc(cpu)}
    if acks is not None:
        body["ack_counts"] = acks
    return body


def test_ops_history_sums_live_nodes():
    ops = Ops(fake_center())
    n = len(ACK_BOUNDS) + 1
    ops.on_stats(Stats("gate1", "gate", gate_report(1.0, acks=[0] * n)))
    ops.on_stats(Stats("gate2", "gate", gate_report(1.0, acks=[0] * n, sessions=4)))
    ops.on_stats(Stats("zone1", "zone", {"t": 1.0, "stored": 10, "errors": {}}))
    ops.on_stats(Stats("gate1", "gate", gate_report(2.0, deliveries=30, errors=2, acks=[10] + [0] * (n - 1))))
    ops.on_stats(Stats("gate2", "gate", gate_report(2.0, deliveries=5, acks=[0] * n, sessions=4)))
    ops.on_stats(Stats("zone1", "zone", {"t": 2.0, "stored": 30, "errors": {"muted": 1}}))
    point = ops.point(ops.reports["zone1"]["received"])
    assert point == {"msgs_per_s": 20.0, "deliveries_per_s": 35.0, "sessions": 5, "errors_per_s": 2.0,
                     "refusals_per_s": 1.0, "ack_p99_ms": pytest.approx(1.0, abs=0.01)}
    # a stale node is left out of the sums
    ops.reports["gate2"]["received"] -= 10
    assert ops.point(ops.reports["zone1"]["received"])["sessions"] == 1
    snap = ops.snapshot()
    assert len(snap["history"]["t"]) >= 1 and snap["history_seconds"] == HISTORY_SECONDS
    gate = next(g for g in snap["gates"] if g["node"] == "gate1")
    assert gate["cpu_pct"] == 0.0 and gate["rss"] == 50 << 20 and gate["restarts"] == 0
    assert "ack_counts" not in gate and "ack_delta" not in gate and "proc" not in gate
    assert snap["center"]["rss"] > 0 and "restarts" in snap["center"]


# -- the node table and the actions ------------------------------------------------------
def test_one_report_per_known_node():
    ops = Ops(fake_center())
    ops.on_stats(Stats("gate1", "gate", {"t": 1.0, "frames_in": 1, "sessions": 1}))
    ops.on_stats(Stats("gate1", "gate", {"t": 2.0, "frames_in": 4, "sessions": 2}))
    ops.on_stats(Stats("intruder", "gate", {"t": 2.0}))        # not in the config
    ops.on_stats(Stats("zone1", "gate", {"t": 2.0}))           # wrong role
    assert set(ops.reports) == {"gate1"}
    snap = ops.snapshot()
    gate = snap["gates"][0]
    assert gate["node"] == "gate1" and gate["sessions"] == 2 and gate["in_per_s"] == 3.0
    assert not gate["stale"] and "t" not in gate and "received" not in gate
    assert snap["zones"] == [{"node": "zone1", "age_s": None, "stale": True}]
    assert snap["redis"] == {} and snap["center"]["node"] == "center1"


def test_last_actions_bounded_newest_first():
    ops = Ops(fake_center())
    for k in range(ACTIONS_KEPT + 5):
        ops.action("kick", {"user": f"u{k}"})
    ops.action("group", {"members": ["m" * 30] * 50})
    actions = ops.snapshot()["actions"]
    assert len(actions) == ACTIONS_KEPT
    assert actions[0]["action"] == "group" and len(actions[0]["args"]) == ARGS_SHOWN
    assert actions[1]["args"] == '{"user": "u54"}'
    assert (actions[1]["what"], actions[1]["about"]) == ("kick", "u54")


@pytest.mark.parametrize("name, args, what, about", [
    ("ban", {"user": "al", "reason": ""}, "unban", "al"),
    ("ban", {"user": "al", "reason": "spam"}, "ban", "al: spam"),
    ("ban", {"user": "al"}, "ban", "al: banned by an operator"),
    ("mute", {"user": "bo", "seconds": 0}, "unmute", "bo"),
    ("mute", {"user": "bo", "until": 0}, "unmute", "bo"),
    ("mute", {"user": "bo", "seconds": 600}, "mute", "bo for 10 min"),
    ("mute", {"user": "bo"}, "mute", "bo for 10 min"),
    ("room", {"room": "r:x", "slow": 0}, "slow mode off", "r:x"),
    ("room", {"room": "r:x", "slow": 5}, "slow mode 5 s", "r:x"),
    ("room", {"room": "r:x", "slow": 0, "dups": 30}, "room settings",
     "r:x: slow mode off, duplicate filter 30 s"),
    ("room", {"room": "r:x", "dups": 0}, "room settings", "r:x: duplicate filter off"),
    ("broadcast", {"text": "hello all"}, "broadcast", "hello all"),
    ("revoke", {"user": "cy"}, "revoke tokens", "cy"),
    ("reload", {}, "reload word filter", ""),
    ("drain", {"node": "gate1", "over": 30}, "drain", "gate1 over 30 s"),
    ("drain", {"node": "gate1"}, "drain", "gate1"),
    ("retire", {"node": "gate1"}, "retire", "gate1"),          # a route added later: its name
])
def test_readable_action_names(name, args, what, about):
    assert describe(name, args) == {"what": what, "about": about}


def test_durations_read_plainly():
    assert [duration(s) for s in (5, 90, 600, 5400, 86400 * 2)] == \
        ["5 s", "1.5 min", "10 min", "1.5 h", "2 d"]


def test_every_page_file_is_there_and_uplot_keeps_its_license():
    from center.ops import PAGES, load_pages
    files = load_pages()
    assert set(files) == set(PAGES)
    assert b"MIT License" in files["/vendor/uPlot.LICENSE"][0]
    banner = b"/*! https://github.com/leeoniya/uPlot (v1.6.32)"
    assert files["/vendor/uPlot.iife.min.js"][0].startswith(banner)
