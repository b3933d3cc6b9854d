"""The operator page's copy of the 15-minute history (center/static/ops_format.js
``mergeHistory``), under Node: the first answer (``history_whole``) is taken as it is,
later answers to ``?since=`` are appended, and only the last ``history_seconds`` are kept.
Without node the test skips, saying why; under CI (``CI`` set) it fails (harness.missing).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from harness import missing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.path.join(REPO, "center", "static", "ops_format.js")
SCRIPT = """
import { mergeHistory, newestSecond } from %s;
let kept = null;
const out = [];
for (const answer of JSON.parse(process.argv[1])) {
  kept = mergeHistory(kept, answer);
  out.push({ kept, newest: newestSecond(kept) });
}
process.stdout.write(JSON.stringify(out));
"""


def merged(answers: list[dict]) -> list[dict]:
    node = shutil.which("node") or missing("node is not on PATH: install Node.js 18+ (apt-get install nodejs)")
    out = subprocess.run([node, "--input-type=module", "-e", SCRIPT % json.dumps("file://" + MODULE),
                          json.dumps(answers)], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def answer(ts, whole, seconds=4):
    return {"history": {"t": ts, "sessions": [t * 10 for t in ts]}, "history_whole": whole,
            "history_seconds": seconds}


def test_the_first_answer_is_taken_then_new_rows_are_appended_within_the_bound():
    steps = merged([answer([100, 101], True), answer([102], False), answer([], False),
                    answer([103, 104, 105], False)])
    assert [s["kept"]["t"] for s in steps] == [[100, 101], [100, 101, 102], [100, 101, 102], [102, 103, 104, 105]]
    assert steps[-1]["kept"]["sessions"] == [1020, 1030, 1040, 1050]
    assert [s["newest"] for s in steps] == [101, 102, 102, 105]


def test_a_whole_answer_replaces_what_the_page_had():
    steps = merged([answer([500, 501, 502], True), answer([7, 8], True), answer([], True)])
    assert [s["kept"]["t"] for s in steps] == [[500, 501, 502], [7, 8], []]
    assert steps[-1]["newest"] is None
