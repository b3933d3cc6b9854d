"""The JavaScript client's reading of ``kicked{moving}`` (clients/js/zonechat.js
``movingPlan``), under Node: no WebSocket and no npm package needed, only the module.

The plan: the WebSocket addresses of the named gates in random order, with the current
URL's scheme and path, the draining gate's own URL left out and put last; a random wait
within ``retry_ms`` (bounded; a default when it is missing). Without node the test skips,
saying why; under CI (``CI`` set) it fails instead (harness.missing).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from harness import missing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.path.join(REPO, "clients", "js", "zonechat.js")

SCRIPT = """
import { movingPlan } from %s;
const body = JSON.parse(process.argv[1]);
let seed = 1;                                          // a repeatable Math.random
const random = () => ((seed = (seed * 16807) %% 2147483647) - 1) / 2147483646;
const plans = [];
for (let i = 0; i < 40; i += 1) plans.push(movingPlan(body, process.argv[2], random));
process.stdout.write(JSON.stringify(plans));
"""


def plans(body: dict, current: str) -> list[dict]:
    node = shutil.which("node") or missing("node is not on PATH: install Node.js 18+ (apt-get install nodejs)")
    script = SCRIPT % json.dumps("file://" + MODULE)
    out = subprocess.run([node, "--input-type=module", "-e", script, json.dumps(body), current],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_moving_goes_to_the_named_gates_at_random_with_the_draining_one_last():
    body = {"t": "kicked", "reason": "moving", "retry_ms": 400,
            "gates": [{"tcp": "127.0.0.1:7710", "ws": "127.0.0.1:7711"}, {"tcp": "127.0.0.1:7720"},
                      {"ws": "[::1]:7731"}, {"ws": "127.0.0.1:7701"}, {"ws": "no port"}, "junk"]}
    got = plans(body, "ws://127.0.0.1:7701/ws")
    for plan in got:
        assert 0 <= plan["waitMs"] <= 400
        assert sorted(plan["urls"][:-1]) == ["ws://127.0.0.1:7711/ws", "ws://[::1]:7731/ws"]
        assert plan["urls"][-1] == "ws://127.0.0.1:7701/ws"
    assert len({plan["urls"][0] for plan in got}) == 2          # random, not always the first


def test_the_scheme_and_path_stay_and_a_kick_without_gates_stays_put():
    body = {"retry_ms": 10 ** 9, "gates": [{"ws": "chat2.example.com:443"}]}
    plan = plans(body, "wss://chat.example.com/chat/ws?v=1")[0]
    assert plan["urls"] == ["wss://chat2.example.com/chat/ws?v=1", "wss://chat.example.com/chat/ws?v=1"]
    assert plan["waitMs"] <= 30000
    for plan in plans({"gates": "x", "retry_ms": "soon"}, "ws://127.0.0.1:7701/ws"):
        assert plan["urls"] == ["ws://127.0.0.1:7701/ws"] and 0 <= plan["waitMs"] <= 1000
