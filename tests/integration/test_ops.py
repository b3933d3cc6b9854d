"""Issue 4, part 3: the operator view on center's admin port, against the real cluster.

Traffic from ``client.Client`` shows up in ``GET /v1/ops`` (per-gate sessions,
logged-in users, rooms, msgs in/out and their rates; per-zone slots and stored messages
and their rates; Redis memory from dc; center's counters); the data needs the Bearer
secret, the page ``/ops`` does not (it holds no data); admin actions are listed, newest
first, at most 50.
"""
from __future__ import annotations

import itertools
import json
import os

import pytest

from cluster import admin as admin_mod
from client import Client, dm_conv
from harness import http_request, poll_for

PASSWORD = "password123"
WAIT = 20.0
_names = itertools.count(1)


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_names)}"


def get(cluster, path: str, auth: str | None = "secret"):
    """(status, headers, body bytes) of a GET on the admin port."""
    host, port = cluster.admin_addr
    headers = {}
    if auth is not None:
        headers["Authorization"] = f"Bearer {cluster.secret}" if auth == "secret" else auth
    return http_request(f"http://{host}:{port}{path}", headers)


def ops(cluster) -> dict:
    status, _, body = get(cluster, "/v1/ops")
    assert status == 200, body
    return json.loads(body)


def by_node(rows: list) -> dict:
    return {r["node"]: r for r in rows}


@pytest.fixture
def users(cluster):
    """users(gate, n) -> n logged-in Clients on that gate; all closed after the test."""
    made = []

    def make(gate: str, n: int) -> list:
        host, port = cluster.gate_addrs[gate]
        out = []
        for _ in range(n):
            c = Client(host, port, timeout=10, ping_interval=None).connect()
            made.append(c)
            name = fresh("op")
            c.register(name, PASSWORD)
            c.login(name, PASSWORD)
            out.append(c)
        return out

    yield make
    for c in made:
        c.close()


def test_data_needs_the_secret_but_the_page_does_not(cluster):
    for auth in (None, "Bearer not-the-secret-at-all", f"Basic {cluster.secret}"):
        status, _, body = get(cluster, "/v1/ops", auth=auth)
        assert status == 401 and json.loads(body)["error"] == "unauthorized", (auth, status)
    status, headers, body = get(cluster, "/ops", auth=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"operator view" in body and b"/ops.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    secret = cluster.secret.encode()
    for path in ("/ops.js", "/ops.css"):
        status, _, body = get(cluster, path, auth=None)
        assert status == 200 and secret not in body
    assert get(cluster, "/v1/nothing", auth=None)[0] == 401


def test_every_node_reports_and_traffic_shows(cluster, users):
    first = ops(cluster)
    assert sorted(by_node(first["gates"])) == ["gate1", "gate2"]
    assert sorted(by_node(first["zones"])) == ["zone1", "zone2"]
    base_in = {g["node"]: g.get("frames_in", 0) for g in first["gates"]}
    base_stored = sum(z.get("stored", 0) for z in first["zones"])
    a = users("gate1", 3)
    b = users("gate2", 2)
    a[0].join(f"r:{fresh('hall')}")
    everyone = a + b
    for k, c in enumerate(everyone):
        c.send(dm_conv(c.user, everyone[(k + 1) % len(everyone)].user), f"hello {k}")

    def counted():
        d = ops(cluster)
        gates, zones = by_node(d["gates"]), d["zones"]
        ok = (gates["gate1"].get("sessions") == 3 and gates["gate1"].get("users") == 3
              and gates["gate2"].get("sessions") == 2 and gates["gate2"].get("users") == 2
              and gates["gate1"].get("rooms") == 1
              and gates["gate1"]["frames_in"] >= base_in["gate1"] + 3 * 3 + 1
              and gates["gate2"]["frames_in"] >= base_in["gate2"] + 2 * 3
              and sum(z.get("stored", 0) for z in zones) >= base_stored + 5)
        return d if ok else None
    d = poll_for(counted, WAIT, "the sessions, msgs and stored counts in /v1/ops")
    gates = by_node(d["gates"])
    assert gates["gate1"]["frames_out"] >= 3 * 3 + 1     # ok, welcome, ack each; joined
    assert gates["gate1"]["live_dropped"] == 0 and gates["gate1"]["kicks"] == {}
    assert sum(z["slots"] for z in d["zones"]) == cluster.cfg.chat.slots
    assert all(z["slots"] > 0 and not z["stale"] for z in d["zones"])
    assert d["redis"]["used_memory"] > 0 and d["redis"]["used_memory_human"]
    assert d["center"]["node"] == "center1" and isinstance(d["center"]["online"], int)
    assert all(g["age_s"] is not None and g["age_s"] < 3 for g in d["gates"])


def test_rates_come_from_successive_reports(cluster, users):
    a, b = users("gate1", 1)[0], users("gate2", 1)[0]
    conv = dm_conv(a.user, b.user)
    sent = itertools.count()

    def busy():                  # 3 sends per 0.25 s: under the gate's 20/s per user
        for _ in range(3):
            a.send(conv, f"rate {next(sent)}")
        d = ops(cluster)
        gate1, gate2 = by_node(d["gates"])["gate1"], by_node(d["gates"])["gate2"]
        stored = sum(z.get("stored_per_s") or 0 for z in d["zones"])
        # gate2 reports on its own clock: its rate exists once two of its reports are in
        return d if (gate1.get("in_per_s") or 0) > 0 and (gate1.get("out_per_s") or 0) > 0 \
            and stored > 0 and "out_per_s" in gate2 and gate2["out_per_s"] is not None else None
    d = poll_for(busy, WAIT, "non-zero msgs/s and stored/s in /v1/ops, a rate from gate2", interval=0.25)
    gate2 = by_node(d["gates"])["gate2"]
    assert gate2["out_per_s"] is not None and gate2["out_per_s"] >= 0


def test_admin_actions_are_listed_newest_first_and_bounded(cluster, users):
    victim = users("gate1", 1)[0]
    admin_mod.call(cluster.cfg, "/v1/mute", {"user": victim.user, "seconds": 30})
    latest = ops(cluster)["actions"][0]
    assert latest["action"] == "mute" and victim.user in latest["args"] and latest["at"] > 0
    assert ops(cluster)["actions"][0] == latest          # reading the view is no action
    for k in range(55):
        admin_mod.call(cluster.cfg, "/v1/kick", {"user": f"nobody{k}"})
    actions = ops(cluster)["actions"]
    assert len(actions) == 50
    assert actions[0]["action"] == "kick" and "nobody54" in actions[0]["args"]
    assert all(a["action"] == "kick" for a in actions)


def test_since_sends_only_the_history_the_page_lacks(cluster):
    """The page asks ``?since=<its newest second>``: only newer rows come back (a poll a
    second gets one row, not 900); a second center does not keep means the whole history."""
    first = ops(cluster)
    assert first["history_whole"] is True
    newest = poll_for(lambda: (t := ops(cluster)["history"]["t"]) and len(t) >= 2 and t, WAIT,
                      "two seconds of history")[-1]
    later = poll_for(lambda: (d := ops_since(cluster, newest))["history"]["t"] and d, WAIT, "a newer row")
    assert later["history_whole"] is False and later["history"]["t"][0] == newest + 1
    assert set(later["history"]) == set(first["history"])
    assert all(len(col) == len(later["history"]["t"]) for col in later["history"].values())
    assert ops_since(cluster, 1)["history_whole"] is True          # long gone: all of it
    for bad in ("abc", "-5", "1e3", "9" * 13):
        status, _, body = get(cluster, f"/v1/ops?since={bad}")
        assert status == 400 and json.loads(body)["error"] == "bad_request", bad


def ops_since(cluster, since: int) -> dict:
    status, _, body = get(cluster, f"/v1/ops?since={since}")
    assert status == 200, body
    return json.loads(body)
