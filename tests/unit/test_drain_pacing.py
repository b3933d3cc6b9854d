"""The drain's pure parts (gate/drain.py): the paced schedule, the other gates' addresses,
the ``kicked{moving}`` body; and the drain worker on a stand-in gate, in real time."""
import bisect
import logging
import time

import gevent
import pytest

import cluster  # noqa: F401
from cluster import config as config_mod
from cluster.codec import unpackb
from gate import drain

NODES = {
    "center1": {"role": "center"}, "login1": {"role": "login"}, "zone1": {"role": "zone"},
    "dc1": {"role": "dc"}, "log1": {"role": "log"},
}


def config(gates: dict):
    return config_mod.from_dict({"nodes": {**NODES, **gates}})


# -- the schedule --------------------------------------------------------------------------
@pytest.mark.parametrize("n, over", [(1, 2), (7, 2), (40, 2), (40, 0.5), (1000, 30), (18000, 30), (3, 10)])
def test_the_schedule_kicks_everyone_once_spread_evenly(n, over):
    plan = drain.schedule(n, over)
    assert sum(count for _, count in plan) == n
    times = [at for at, _ in plan]
    assert times == sorted(times) and len(set(times)) == len(times) and times[0] == 0
    assert times[-1] <= over
    fair = n / over                                     # sessions per second
    expected_last = over * (n - 1) / n
    assert times[-1] == pytest.approx(expected_last, abs=drain.TICK + 1e-9)
    for at, count in plan:                              # no batch above one tick's share (rounded up)
        assert count <= int(fair * drain.TICK) + 1
    kicks = [at for at, count in plan for _ in range(count)]
    for i, start in enumerate(kicks):                   # no 100 ms window above its fair share
        in_window = bisect.bisect_left(kicks, start + 0.1 - 1e-9) - i
        assert in_window <= fair * 0.1 + 2


def test_two_seconds_of_forty_is_two_kicks_per_100_ms_from_0_to_1_95_s():
    plan = drain.schedule(40, 2.0)
    assert plan == [(pytest.approx(i * 0.05), 1) for i in range(40)]


def test_no_duration_or_no_sessions():
    assert drain.schedule(0, 2) == []
    assert drain.schedule(5, 0) == [(0.0, 5)]
    assert drain.schedule(5, -1) == [(0.0, 5)]


# -- the moving body -----------------------------------------------------------------------
def test_the_other_gates_are_named_by_their_public_addresses_else_host_and_ports():
    cfg = config({
        "gate1": {"role": "gate", "host": "10.0.0.1", "tcp_port": 7700, "ws_port": 7701},
        "gate2": {"role": "gate", "host": "10.0.0.2", "tcp_port": 7700, "ws_port": 7701},
        "gate3": {"role": "gate", "host": "::1", "tcp_port": 7720},
        "gate4": {"role": "gate", "host": "10.0.0.4", "tcp_port": 7700, "ws_port": 7701,
                  "public_tcp": "chat.example.com:7000", "public_ws": "chat.example.com:443"},
    })
    assert drain.gate_addresses(cfg, "gate1") == [
        {"tcp": "10.0.0.2:7700", "ws": "10.0.0.2:7701"},
        {"tcp": "[::1]:7720"},
        {"tcp": "chat.example.com:7000", "ws": "chat.example.com:443"},
    ]
    assert [g["tcp"] for g in drain.gate_addresses(cfg, "gate2")][0] == "10.0.0.1:7700"


def test_a_lone_gate_names_no_other():
    cfg = config({"gate1": {"role": "gate", "tcp_port": 7700}})
    assert drain.gate_addresses(cfg, "gate1") == []


def test_the_moving_body_carries_the_gates_and_the_retry_hint():
    gates = [{"tcp": "10.0.0.2:7700"}]
    assert drain.moving_body(gates, 120) == {"t": "kicked", "reason": "moving", "gates": gates, "retry_ms": 120}


def test_the_retry_hint_is_the_time_between_two_kicks_within_a_tick_and_the_most():
    assert drain.retry_hint_ms(30, 2.0) == 67                   # 15 kicks a second
    assert drain.retry_hint_ms(10_000, 30.0) == 50              # batches: a tick at least
    assert drain.retry_hint_ms(3, 30.0) == drain.RETRY_MS_MAX   # a slow drain: at most RETRY_MS_MAX
    assert drain.retry_hint_ms(30, 0) == drain.RETRY_MS_MAX     # everyone at once: the widest spread
    assert drain.retry_hint_ms(0, 2.0) == drain.RETRY_MS_MAX


# -- the worker on a stand-in gate ---------------------------------------------------------
class FakeSession:
    def __init__(self, sid):
        self.sid, self.closing, self.closed = sid, False, False


class FakeGate:
    """What Drain touches of a GateNode: sessions, kick, spawn, stop, the listeners."""

    def __init__(self, n, cfg):
        self.name, self.config, self.draining, self.exit_code = "gate1", cfg, False, 1
        self.sessions = {i: FakeSession(i) for i in range(n)}
        self.kicks, self.greenlets, self.stopped = [], [], gevent.event.Event()
        self.server = self.web = None
        self.log = logging.getLogger("test.drain")

    def kick(self, s, reason, body):
        self.kicks.append((time.monotonic(), s.sid, reason, unpackb(body)))
        s.closing = True
        gevent.spawn_later(0.01, self.sessions.pop, s.sid, None)

    def spawn(self, fn, *args, name=None):
        self.greenlets.append(gevent.spawn(fn, *args))

    def stop(self):
        self.stopped.set()


def test_the_drain_worker_kicks_everyone_at_the_pace_then_stops_with_code_0(caplog):
    caplog.set_level(logging.INFO, "test.drain")
    cfg = config({"gate1": {"role": "gate", "tcp_port": 7700}, "gate2": {"role": "gate", "tcp_port": 7710}})
    gate = FakeGate(20, cfg)
    gate.sessions[3].closing = True                     # already on its way out: left alone
    gevent.spawn_later(0.2, gate.sessions.pop, 3)
    answer = drain.begin(gate, 0.5)
    assert answer == {"t": "ok", "sessions": 20, "over": 0.5, "already": False,
                      "retry_ms": 50} and gate.draining
    assert drain.begin(gate, 0.5)["already"] is True    # a second drain only reports
    assert gate.stopped.wait(5) and gate.exit_code == 0
    times = [t for t, *_ in gate.kicks]
    assert len(gate.kicks) == 19 and 3 not in {sid for _, sid, *_ in gate.kicks}
    assert 0.35 <= times[-1] - times[0] <= 0.7
    assert {reason for _, _, reason, _ in gate.kicks} == {"moving"}
    assert all(body["gates"] == [{"tcp": "127.0.0.1:7710"}] and body["retry_ms"] == 50 for *_, body in gate.kicks)
    assert "gate1 drained 19 sessions over 0." in caplog.text
