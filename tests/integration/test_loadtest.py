"""``zonechat loadtest`` end to end: Locust headless against a real cluster, small enough for CI.

50 users chat in one room for 15 steady seconds; the run must write Locust's CSV and HTML
reports and a summary with deliveries, latencies, process samples and zero correctness
errors, and exit 0.
"""
import glob
import json
import os
import subprocess
import sys

from harness import REPO

RUN_TIMEOUT = 55.0


def test_loadtest_world_writes_reports_and_passes(cluster, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "loadtest", "world", "--users", "50", "--duration", "15",
         "--out", str(tmp_path), "-c", cluster.config_path],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "steady: 50 users logged in" in out.stdout     # progress was shown
    [report] = glob.glob(os.path.join(str(tmp_path), "loadtest-world-*"))
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "locust.html",
                 "results.json", "samples.json", "summary.json", "summary.md"):
        assert os.path.getsize(os.path.join(report, name)) > 0, name

    with open(os.path.join(report, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["verdict"] == "pass", summary["reasons"]
    assert summary["correctness"]["errors"] == 0, summary["correctness"]
    steady = summary["steady"]
    assert steady["users"] == 50 and steady["seconds"] >= 14
    assert steady["msgs_in"] > 0 and steady["deliveries"] > steady["msgs_in"]   # a room fans out
    assert steady["deliveries_per_s"] > 0 and steady["e2e_ms"]["p99"] is not None
    assert steady["ack_ms"]["p50"] is not None
    assert summary["total"]["login_ms"]["count"] == 50
    names = {p["name"] for p in summary["processes"]}
    assert {"redis", "gate1", "gate2", "zone1", "center1"} <= names
    assert all(p["rss_mb_max"] > 0 for p in summary["processes"])
    with open(os.path.join(report, "locust_stats.csv"), encoding="utf-8") as fh:
        assert "send→msg" in fh.read()
