"""Issue 13, point 3: ``zonechat drain gate1 --over 2s`` on the real cluster.

Sessions of every kind sit on gate1: Python clients logged in with ``reconnect=True``, a
raw WebSocket one, the JavaScript client under Node (clients/js, when node and its ``ws``
package are there: skipped, or failed under CI, like tests/integration/test_js_client.py),
and TCP connections that have not logged in yet. After the drain command:

- gate1's TCP and WebSocket ports refuse new connections at once; the open ones stay;
- gate1's ``/readyz`` is 503 while it drains (a draining gate is not ready);
- every session gets ``kicked{moving}`` naming gate2's addresses (``gates: [{tcp, ws}]``)
  and a ``retry_ms`` hint, the kicks spread over the drain: the first and last at least
  1 s apart, and no 100 ms holding more than its fair share (sessions / over);
- the Python clients log in again on gate2 (not gate1) and DM each other there; the
  JavaScript client reconnects to gate2's WebSocket address;
- gate1 logs ``gate1 drained N sessions over Xs``, exits with code 0, and the supervisor
  starts it again: it accepts connections once more.

The admin route refuses a bad body with 400 JSON and is bearer-authenticated like the rest.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
import websocket

from client import Client, dm_conv
from cluster.codec import packb, unpackb
from cluster.rolling import readyz_url
from gate.drain import retry_hint_ms
from harness import REPO, http_request, output_of, poll_for, zonechat
from kit import PASSWORD, Raw, fresh, register
from test_admin_api import http

SESSIONS = 30                   # Python clients with reconnect=True on gate1
OVER = 2.0
JS_DIR = os.path.join(REPO, "clients", "js")
JS_MOVER = """
import WebSocket from 'ws';
import { ZonechatClient } from './zonechat.js';
const [url, user, password] = process.argv.slice(1);
const chat = new ZonechatClient({ url, WebSocket });
const kicks = [];
chat.on('kicked', ({ reason }) => kicks.push(reason));
chat.on('welcome', () => {
  if (!kicks.length) return;
  console.log(JSON.stringify({ kicks, url: chat.url, reconnects: chat.counters.reconnects }));
  chat.close();
  process.exit(0);
});
setTimeout(() => { console.log(JSON.stringify({ kicks, timeout: true })); process.exit(1); }, 30000);
await chat.connect();
await chat.login({ user, password });
console.log(JSON.stringify({ ready: true }));
"""


class Mover(Client):
    """A client that notes when each kick arrived and when it was logged in again."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, on_connection=self._on_connection, **kwargs)
        self.kicks: list = []               # (time.monotonic(), body)
        self.back: list = []                # time.monotonic() of each reconnect

    def _dispatch(self, body: dict) -> None:
        if body.get("t") == "kicked":
            self.kicks.append((time.monotonic(), body))
        super()._dispatch(body)

    def _on_connection(self, state: str) -> None:
        if state == "reconnected":
            self.back.append(time.monotonic())


def refused(addr) -> bool:
    try:
        socket.create_connection(addr, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def readyz(cluster, node: str) -> int:
    """The status of the supervisor's /readyz for ``node``."""
    return http_request(readyz_url(cluster.cfg, None, node), timeout=5)[0]


def js_mover(cluster, user: str) -> subprocess.Popen | None:
    """The JavaScript client logged in on gate1 under Node; None (a skip) without node or
    clients/js/node_modules, a failure under CI."""
    from test_js_client import need_node
    try:
        node = need_node()
    except pytest.skip.Exception:
        return None
    url = "ws://%s:%d/ws" % cluster.ws_addrs["gate1"]
    proc = subprocess.Popen([node, "--input-type=module", "-e", JS_MOVER, url, user, PASSWORD], cwd=JS_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert json.loads(line or "{}").get("ready"), line + proc.stdout.read()
    return proc


def js_result(proc: subprocess.Popen) -> dict:
    return json.loads(output_of(proc, 40).strip().splitlines()[-1])


def ws_login(cluster, gate: str, user: str) -> websocket.WebSocket:
    ws = websocket.create_connection("ws://%s:%d/ws" % cluster.ws_addrs[gate], timeout=10,
                                     suppress_origin=True)
    ws.send_binary(packb({"t": "login", "rid": 1, "user": user, "password": PASSWORD, "v": 1}))
    assert unpackb(ws.recv())["t"] == "welcome"
    return ws


def test_the_drain_route_refuses_bad_bodies_and_needs_the_secret(cluster):
    for body, why in (({}, "'node'"), ({"node": "nope"}, "no node"), ({"node": "zone1"}, "a zone"),
                      ({"node": 7}, "'node'"), ({"node": "gate1", "over": -1}, "'over'"),
                      ({"node": "gate1", "over": "2s"}, "'over'"), ({"node": "gate1", "over": True}, "'over'"),
                      ({"node": "gate1", "over": 10 ** 6}, "'over'")):
        status, answer = http(cluster, "/v1/drain", body)
        assert status == 400 and answer["error"] == "bad_request" and why in answer["reason"], (body, answer)
    status, answer = http(cluster, "/v1/drain", {"node": "gate1", "over": 2}, auth=None)
    assert status == 401 and answer["error"] == "unauthorized"
    out = zonechat("drain", "zone1", "--over", "2s", config=cluster.config_path)
    assert out.returncode == 1 and "not a gate" in out.stderr, out.stdout + out.stderr
    assert cluster.node("gate1")["restarts"] == 0       # nothing was drained


class Opened(list):
    """Everything a test opened, closed (or killed) at its end whatever happened."""

    def close(self) -> None:
        for thing in self:
            try:
                if isinstance(thing, subprocess.Popen):
                    if thing.poll() is None:
                        thing.kill()
                        thing.wait()
                else:
                    thing.close()
            except Exception:
                pass


@pytest.fixture
def opened():
    box = Opened()
    yield box
    box.close()


def sessions_on_gate1(cluster, opened: Opened):
    """(Python movers, a raw WebSocket, two raw TCP connections not logged in, the Node
    client or None), all on gate1 and put in ``opened``."""
    gate1 = cluster.gate_addrs["gate1"]
    names = [register(cluster, fresh("mv")) for _ in range(SESSIONS + 2)]
    movers = []
    for name in names[:SESSIONS]:
        movers.append(Mover(*gate1, timeout=10, reconnect=True, ping_interval=None, catch_up=False))
        opened.append(movers[-1])
        movers[-1].connect().login(name, PASSWORD)
    ws = ws_login(cluster, "gate1", names[SESSIONS])
    lurkers = [Raw(gate1) for _ in range(2)]
    opened.extend([ws, *lurkers])
    assert all(r.is_open() for r in lurkers)
    js = js_mover(cluster, names[SESSIONS + 1])
    if js is not None:
        opened.append(js)
    return movers, ws, lurkers, js


def check_the_kicks(movers, expected, now_at, retry_ms) -> tuple[float, int]:
    """Each mover got one kicked{moving} naming ``expected`` with ``retry_ms`` and is logged
    in at ``now_at``; (seconds from the first kick to the last, the most kicks within 100 ms)."""
    for c in movers:
        _, body = c.kicks[0]
        assert body["reason"] == "moving" and body["gates"] == expected and body["retry_ms"] == retry_ms
        assert c.addr == now_at and c.session_up.is_set() and len(c.kicks) == 1
    kicks = sorted(c.kicks[0][0] for c in movers)
    busiest = max(sum(1 for t in kicks if start <= t < start + 0.1) for start in kicks)
    return kicks[-1] - kicks[0], busiest


def test_drain_moves_every_session_to_the_other_gate_at_the_pace(cluster, opened):
    gate1, gate2 = cluster.gate_addrs["gate1"], cluster.gate_addrs["gate2"]
    movers, ws, lurkers, js = sessions_on_gate1(cluster, opened)
    total = SESSIONS + 3 + (js is not None)
    old_pid = cluster.pid("gate1")
    assert readyz(cluster, "gate1") == 200

    out = zonechat("drain", "gate1", "--over", f"{OVER:g}s", config=cluster.config_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"moving {total} sessions" in out.stdout, out.stdout
    assert refused(gate1) and refused(cluster.ws_addrs["gate1"])   # at once
    assert readyz(cluster, "gate1") == 503                          # draining: not ready
    expected = [{"tcp": "%s:%d" % gate2, "ws": "%s:%d" % cluster.ws_addrs["gate2"]}]
    for raw in lurkers:                                 # not logged in: kicked all the same
        kick = raw.expect("kicked", timeout=OVER + 5)
        assert kick["reason"] == "moving" and kick["gates"] == expected
    ws_kick = unpackb(ws.recv())
    assert ws_kick["reason"] == "moving" and ws_kick["gates"] == expected

    poll_for(lambda: all(c.back for c in movers), OVER + 20, "every client logged in again")
    spread, busiest = check_the_kicks(movers, expected, gate2, retry_hint_ms(total, OVER))
    fair = total / OVER * 0.1                           # sessions per 100 ms
    print(f"\n{SESSIONS} kicks over {spread:.2f}s, at most {busiest} in 100 ms (fair share {fair:.1f})")
    assert spread >= 1.0 and busiest <= fair + 2
    if js is not None:                                  # the JavaScript client went to gate2's ws
        moved = js_result(js)
        assert moved["kicks"] == ["moving"] and moved["url"] == "ws://%s:%d/ws" % cluster.ws_addrs["gate2"], moved
    a, b = movers[0], movers[1]                         # chatting on gate2 now
    ack = a.send(dm_conv(a.user, b.user), "moved")
    assert b.expect("msg", timeout=10, conv=dm_conv(a.user, b.user))["seq"] == ack["seq"]

    fresh_gate = cluster.wait_ready("gate1", old_pid=old_pid, timeout=30)
    poll_for(lambda: "gate1 drained" in cluster.log_text("gate1"), 10, "the drained line")
    assert f"gate1 drained {total} sessions over" in cluster.log_text("gate1")
    assert "gate1 exited with code 0" in cluster.log_text("supervisor")
    assert fresh_gate["restarts"] == 1
    with Raw(gate1) as back:                            # accepting again
        assert back.is_open()
