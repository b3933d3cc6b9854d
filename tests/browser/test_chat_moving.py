"""A drain moves the chat page to the other gate by itself (issue 13, point 3), in a real
browser (Debian's Chromium through Playwright).

The page is served by gate1, so its origin is ``http://127.0.0.1:<gate1 ws_port>``; gate2
lets it in only because ``gate.ws_origins`` lists both gates' page origins, as the shipped
config.yaml does (the code default allows a gate's own page only), and the page's
Content-Security-Policy lets it connect there (connect-src names the other gates). After
``POST /v1/drain {"node": "gate1", "over": 2}`` the page gets ``kicked{moving}`` naming
gate2, shows "reconnecting…" for a moment, logs in on gate2 with its token and goes on: a
message typed after the move reaches a TCP client on gate2, and nothing but that transient
state is shown (no notice, no failed WebSocket in the console). Saves chat_moved.png.
"""
from __future__ import annotations

import os

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from chatpage import PASSWORD
from client import Client, dm_conv
from cluster import admin as admin_cli
from harness import RunningCluster, make_config, poll_for

OVER = 2                      # seconds of drain, as the other drain tests
MOVE_WAIT = OVER + 15.0       # the kick comes within OVER, the reconnect within retry_ms
WATCH = """() => {
    const status = document.getElementById('status'), notice = document.getElementById('notice');
    window.seenStates = [];
    window.seenNotices = [];
    new MutationObserver(() => window.seenStates.push(status.textContent))
        .observe(status, {childList: true, characterData: true, subtree: true});
    new MutationObserver(() => {
        if (!notice.hidden) window.seenNotices.push(document.getElementById('notice-text').textContent);
    }).observe(notice, {attributes: true, childList: true, characterData: true, subtree: true});
}"""
MOVED = """(url) => window.zonechat.core.url === url && window.zonechat.core.online
            && document.getElementById('status').textContent === 'online'"""
WHERE = """() => ({url: window.zonechat.core.url, online: window.zonechat.core.online,
                   status: document.getElementById('status').textContent, states: window.seenStates,
                   kicked: window.zonechat.core.kickedReason, counters: window.zonechat.core.counters})"""


def page_origins(path: str) -> list[str]:
    """Both gates' page origins in the config at ``path`` (as the browser sends them)."""
    with open(path, encoding="utf-8") as fh:
        nodes = yaml.safe_load(fh)["nodes"]
    ports = [nodes[name]["ws_port"] for name in ("gate1", "gate2")]
    return [f"http://{host}:{port}" for port in ports for host in ("127.0.0.1", "localhost")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The default test cluster, its gates allowing each other's page origins: the config is
    written first (make_config picks the free ports), then its gate.ws_origins is set from
    the ports it holds. Stopped at the end, even when the start failed halfway."""
    path = make_config(str(tmp_path_factory.mktemp("cluster")))
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    raw.setdefault("gate", {})["ws_origins"] = page_origins(path)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(raw, fh, sort_keys=False)
    running = RunningCluster(path)
    try:
        yield running.start()
    finally:
        running.stop()


def gate_sessions(cluster, gate: str) -> int:
    """``gate``'s session count in GET /v1/ops (each gate reports about once a second)."""
    gates = {g["node"]: g for g in admin_cli.call(cluster.cfg, "/v1/ops")["gates"]}
    return (gates.get(gate) or {}).get("sessions", 0)


def test_a_drain_moves_the_page_to_the_other_gate(open_page, cluster):
    tag = os.getpid() % 1000
    a, c = f"mover{tag}", f"stayer{tag}"
    conv = dm_conv(a, c)
    tcp = Client(*cluster.gate_addrs["gate2"], timeout=20, ping_interval=5).connect()
    try:
        tcp.register(c, PASSWORD)
        tcp.login(c, PASSWORD)
        page = open_page("gate1").enter(a)
        p = page.page
        page.dm(c)
        page.say("before the move")
        assert tcp.expect("msg", timeout=15, conv=conv)["body"] == "before the move"
        poll_for(lambda: gate_sessions(cluster, "gate2") == 1, 10, "the TCP client on gate2 in /v1/ops")
        p.evaluate(WATCH)
        old = cluster.pid("gate1")

        drain = admin_cli.call(cluster.cfg, "/v1/drain", {"node": "gate1", "over": OVER})
        assert drain["sessions"] == 1, drain                 # the page, the only one on gate1
        gate2_url = "ws://%s:%d/ws" % cluster.ws_addrs["gate2"]
        try:
            p.wait_for_function(MOVED, arg=gate2_url, timeout=MOVE_WAIT * 1000)
        except PlaywrightTimeout:
            raise AssertionError(f"the page did not move to {gate2_url}: {p.evaluate(WHERE)}; "
                                 f"console: {page.console}") from None
        poll_for(lambda: gate_sessions(cluster, "gate2") == 2, 10, "the page's session on gate2")

        page.say("after the move")
        got = tcp.expect("msg", timeout=15, conv=conv)
        assert (got["from"], got["body"]) == (a, "after the move")
        tcp.send(conv, "welcome to gate2")
        expect(page.bodies()).to_have_text(["before the move", "after the move", "welcome to gate2"])
        expect(p.locator("#messages li.pending, #messages li.failed")).to_have_count(0)
        expect(p.locator("#status")).to_have_text("online")
        expect(p.locator("#notice")).to_be_hidden()
        states = p.evaluate("() => window.seenStates")
        assert "reconnecting…" in states and set(states) <= {"reconnecting…", "online"}, states
        assert p.evaluate("() => window.seenNotices") == []
        assert p.evaluate("() => window.zonechat.core.counters.reconnects") == 1
        # no 403 from gate2, no connection the page's CSP blocked, no retry elsewhere
        refused = [line for line in page.console
                   if any(w in line for w in ("WebSocket", "Content Security Policy", "pageerror"))]
        assert refused == [], refused
        page.screenshot("chat_moved.png")
        cluster.wait_ready("gate1", old_pid=old, timeout=30)   # drained, exited, started afresh
    finally:
        tcp.close()
