"""The JavaScript client (clients/js/zonechat.js) under Node against the whole cluster.

``node clients/js/test/run.mjs`` gets both gates' WebSocket addresses in
``ZONECHAT_WS_URLS``, runs its checks (register + login, a DM across gates once and in
order, a resend after a forced reconnect answered with the original ack, a DM gap filled
by sync, messages missed while away coming in order after the reconnect, a group gap
filled, a replaced session that stays off until ``resume()``, a room, logout; with ``--all``
also issue 15's extensions, against a scripted socket and against the cluster) and prints a
JSON report. Without node or clients/js/node_modules (``npm ci`` in
clients/js) the tests skip, saying why; under CI (``CI`` set) they fail instead.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from harness import REPO, free_ports, missing

JS_DIR = os.path.join(REPO, "clients", "js")
RUNNER = os.path.join("test", "run.mjs")
RUN_TIMEOUT = 420                 # seconds for the whole run (each test is bounded at 45 s)
CHECKS = {
    "register_and_login", "dm_across_gates_once_in_order", "resend_after_a_forced_reconnect",
    "dm_gap_filled_by_sync", "missed_while_away_come_in_order_after_the_reconnect",
    "group_gap_filled_by_sync", "session_replaced_stops_until_resume", "room_join_and_message",
    "logout_ends_the_session",
    # issue 15's extensions: the client against a scripted socket, then against the cluster
    "unit_edit_and_recall_resent_with_their_cid", "unit_edit_and_recall_msgs_are_tracked_like_any",
    "unit_read_typing_presence_pushes_reach_the_app", "unit_typing_at_most_once_per_two_seconds",
    "unit_presence_sub_status_and_resubscribe", "unit_passive_room_digest_and_focus",
    "ext_edit_and_recall_across_gates", "ext_unread_and_read_receipts", "ext_typing_reaches_the_other",
    "ext_presence_online_offline_status", "ext_passive_room_digest_then_focus",
}
UNIT = {name for name in CHECKS if name.startswith("unit_")}


def need_node() -> str:
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not on PATH: install Node.js 18+ (apt-get install nodejs npm)"
    elif not os.path.isdir(os.path.join(JS_DIR, "node_modules", "ws")):
        why = "clients/js/node_modules is missing: run `npm ci` in clients/js"
    return node if why is None else missing(why)


@pytest.fixture(scope="module")
def node() -> str:
    """Node's path, checked before the module's cluster starts."""
    return need_node()


def run_js(node: str, urls: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "ZONECHAT_WS_URLS": ",".join(urls)}
    proc = subprocess.run([node, RUNNER, "--all"], cwd=JS_DIR, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no report on stdout (exit {proc.returncode}); stderr:\n{proc.stderr}"
    return proc, json.loads(lines[-1])


def failures(report: dict) -> str:
    return "\n\n".join(f"{t['name']}: {t.get('error')}" for t in report["tests"] if not t["ok"])


def test_js_client_against_the_cluster(node, cluster):
    urls = [f"ws://{host}:{port}/ws" for _, (host, port) in sorted(cluster.ws_addrs.items())]
    assert len(urls) == 2, cluster.ws_addrs
    proc, report = run_js(node, urls)
    assert {t["name"] for t in report["tests"]} == CHECKS
    assert report["ok"] and proc.returncode == 0, failures(report) + "\n\nstderr:\n" + proc.stderr


def test_js_runner_fails_without_a_cluster(node):
    """The runner reports failure, with a reason, when no gate answers: it cannot pass empty."""
    port = free_ports(1)[0]
    proc, report = run_js(node, [f"ws://127.0.0.1:{port}/ws"])
    assert proc.returncode == 1
    assert report["ok"] is False
    assert {t["name"] for t in report["tests"]} == CHECKS
    needing = [t for t in report["tests"] if t["name"] not in UNIT]     # the scripted ones pass alone
    assert all(not t["ok"] and "connect_failed" in t["error"] for t in needing), failures(report)
