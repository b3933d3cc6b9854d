"""summary.html of ``zonechat loadtest`` (issue 14, point 4) in a real browser (Debian's
Chromium through Playwright): a real short load test against the ``cluster`` fixture writes
it; opened from disk (file://, nothing else may load), it shows the run's verdict line and
draws its throughput and latency charts without a page error. Saves load_report.png into
$ZONECHAT_SCREENSHOTS, or reports/test-screenshots/."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from harness import REPO

SCREENSHOTS = os.environ.get("ZONECHAT_SCREENSHOTS") or os.path.join(REPO, "reports", "test-screenshots")
RUN_TIMEOUT = 120.0
CHARTS = ("chart-throughput", "chart-latency", "chart-cpu")
LINE_RGB = (47, 111, 223)          # the first series' stroke in static/summary.js

# pixels of the canvas close to LINE_RGB: the first series' line, not the axes or the bands
COUNT_LINE_PIXELS = """(el, rgb) => {
  const canvas = el.querySelector("canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
        && Math.abs(data[i + 2] - rgb[2]) < 40) { n++; }
  }
  return n;
}"""


@pytest.fixture(scope="module")
def report(cluster, tmp_path_factory) -> tuple[str, str]:
    """(report directory, the command's output) of a 20-user, 4-second world run."""
    out_dir = tmp_path_factory.mktemp("loadreport")
    run = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "loadtest", "world", "--users", "20", "--duration", "4",
         "-c", cluster.config_path, "--out", str(out_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    [directory] = glob.glob(os.path.join(str(out_dir), "loadtest-world-*"))
    return directory, run.stdout


def check_charts(page) -> None:
    """Every chart drew a canvas of a real size from data; the first two drew their first line."""
    for chart in CHARTS:
        plot = page.locator(f"#{chart}")
        expect(plot).to_have_attribute("data-drawn", "1")
        assert int(plot.get_attribute("data-points")) > 0, chart
        box = plot.locator("canvas").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, (chart, box)
    for chart in CHARTS[:2]:                              # deliveries/s out, send→msg p50
        pixels = page.locator(f"#{chart}").evaluate(COUNT_LINE_PIXELS, list(LINE_RGB))
        assert pixels > 20, (chart, pixels)


def test_summary_html_shows_the_verdict_and_draws_its_charts(browser, report):
    directory, stdout = report
    with open(os.path.join(directory, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    line = summary["verdict_line"]
    assert line.startswith("verdict: the cluster ") and " 20 users of world" in line, line
    with open(os.path.join(directory, "summary.md"), encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n") == line
    assert line in stdout.splitlines() and os.path.getsize(os.path.join(directory, "locust.html")) > 0

    page = browser.new_page()
    errors, urls = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: urls.append(r.url))
    try:
        page.goto("file://" + os.path.join(directory, "summary.html"))
        expect(page.locator("#verdict")).to_have_text(line)
        check_charts(page)
        expect(page.locator("#figures")).to_contain_text("cores of")
        expect(page.locator("#correctness")).to_contain_text("seq.gap")
        expect(page.locator("#processes")).to_contain_text("gate1")
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SCREENSHOTS, "load_report.png"), full_page=True)
    finally:
        page.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "about:")) for u in urls), urls
