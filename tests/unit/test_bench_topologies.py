"""W2's topologies and its per-topology summary (tools/bench/workloads.py), the CPU meter's
busiest-processes line (tools/bench/common.py)."""
import argparse
import math

from tools.bench import common, workloads


def args(**kw):
    base = {"gates": None, "zones": None, "topology": "both"}
    return argparse.Namespace(**{**base, **kw})


def row(rate, acks_s, p99, busy, errors=0, unanswered=0):
    return {"rate": rate, "acks_s": acks_s, "p99_ms": p99, "server_busy": busy,
            "cpu_us": busy * 1e6 / acks_s, "errors": errors, "unanswered": unanswered}


def test_both_topologies_default_first_then_one_named():
    assert workloads.topologies(args()) == [("default", 2, 2), ("1+1", 1, 1)]
    assert workloads.topologies(args(topology="1+1")) == [("1+1", 1, 1)]
    assert workloads.topologies(args(topology="default")) == [("default", 2, 2)]


def test_explicit_gates_or_zones_name_one_topology():
    assert workloads.topologies(args(gates=3)) == [("3+1", 3, 1)]
    assert workloads.topologies(args(zones=2, gates=1)) == [("1+2", 1, 2)]


def test_summary_takes_the_knee_and_cpu_per_dm_at_500_and_2000():
    run1 = [row(500, 500, 10, 0.5), row(2000, 2000, 20, 0.8), row(4000, 3990, 40, 0.95),
            row(5000, 4100, 80, 1.0)]                      # fails: p99
    run2 = [row(500, 500, 12, 0.6), row(2000, 2000, 25, 0.9), row(4000, 3980, 45, 0.97, errors=1)]
    got = workloads.w2_summary("default", [run1, run2])
    assert got["topology"] == "default" and got["runs"] == 2
    assert got["knee"] == (3990 + 2000) / 2                  # run2's knee: 2,000 (4,000 had an error)
    assert math.isclose(got["cpu_us_500"], 1100.0)           # median of 1,000 and 1,200 µs
    assert math.isclose(got["cpu_us_2000"], 425.0)
    assert math.isclose(got["busy_500"], 0.55)


def test_summary_of_runs_with_no_passing_step_is_nan():
    got = workloads.w2_summary("1+1", [[row(500, 400, 80, 1.0)]])
    assert math.isnan(got["knee"]) and math.isnan(got["cpu_us_knee"])
    assert math.isnan(got["cpu_us_2000"])


def test_top_processes_busiest_first():
    line = common.top_processes({"gate1": 0.30, "zone1": 0.05, "redis": 0.12, "log1": 0.01}, 3)
    assert line == "gate1 30.0%, redis 12.0%, zone1 5.0%"
