"""Issue 13, point 3: ``zonechat restart --rolling`` under a steady load of writers.

30 Python clients (``reconnect=True``, ``auto_recv``) each write to a DM (15 pairs) and to
a group (3 groups of 10), one message at a time per conversation at a modest pace, each
resent with its cid until acked (what the client does by itself across a reconnect, and
what an app does after ``unavailable``). They all start on gate1. Then, with the writers
running throughout:

1. the baseline: a plain SIGTERM of gate1 (``kicked{shutdown}``): every client reconnects
   to it as soon as it is back, all in about the same second;
2. ``zonechat restart --rolling --over 2s``: gate1 drained (its 30 clients move to gate2
   at 15 per second), gate2 drained (back to gate1), then dc, log, login, both zones and
   center, one at a time, each ready before the next.

At the end every conversation is synced and the fault checker (tests/faultcheck.py)
finds no acked message lost, duplicated, out of order or missing from the history. Every
reconnect's time is recorded: the peak reconnects in any one second, with the drain and
without, is printed (``pytest -s``), and the drained peak stays at the drain's pace
(sessions / over) within a tolerance.
"""
from __future__ import annotations

import bisect
import itertools
import signal
import subprocess
import sys
import time

import gevent
from gevent.event import Event

import faultcheck
from client import Client, dm_conv
from harness import REPO, output_of, poll_for
from kit import PASSWORD, fresh, register, send_until_acked
from test_fault_suite import full_history

OVERRIDES = {"gate": {"request_timeout": 2}}     # a restarting zone's sends fail fast: resent
CLIENTS = 30                                      # all on gate1 to start with
GROUP_SIZE = 10
OVER = 2.0                                        # seconds per gate drain
PACE = 0.5                                        # seconds between two sends to one conversation
RETRY = 0.2                                       # seconds before resending an unacked cid
ACK_PATIENCE = 60.0


def peak_per_second(times: list[float]) -> int:
    """The most events within any one second (a sliding window, not fixed buckets)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def test_peak_per_second_slides():
    assert peak_per_second([]) == 0
    assert peak_per_second([0.5, 1.2, 1.4, 2.6]) == 3           # 1.2..2.2 would miss 0.5
    assert peak_per_second([0.0, 0.99, 1.0, 1.98]) == 3


class Phase:
    """The phase of the run, stamped on each send when first tried (the checker's rows)."""
    name = "steady"


class Writer:
    """One client's sends to one conversation: one at a time, resent by cid until acked."""

    def __init__(self, client: Client, conv: str, phase: Phase):
        self.client, self.conv, self.phase = client, conv, phase
        self.sends: list[faultcheck.Send] = []

    def run(self, stop: Event) -> None:
        for i in itertools.count(1):
            if stop.wait(PACE):
                return
            send = faultcheck.Send(self.client.user, self.conv, f"{self.client.user}-{self.conv[:1]}{i}",
                                   self.phase.name)
            self.sends.append(send)
            send.acks.append(send_until_acked(self.client, self.conv, send.cid, i, ACK_PATIENCE, RETRY))

def users_and_convs(cluster) -> tuple[list[str], list[tuple[str, str]]]:
    """CLIENTS registered names and each one's two conversations (its DM, its group)."""
    names = [fresh("rr") for _ in range(CLIENTS)]
    for name in names:
        register(cluster, name)
    groups = [f"g:{fresh('rrg')}" for _ in range(CLIENTS // GROUP_SIZE)]
    convs = [(dm_conv(name, names[i ^ 1]), groups[i // GROUP_SIZE]) for i, name in enumerate(names)]
    return names, convs


def connect_all(cluster, names, reconnects: list) -> list[Client]:
    host, port = cluster.gate_addrs["gate1"]
    note = lambda state: reconnects.append(time.monotonic()) if state == "reconnected" else None
    clients = []
    for name in names:
        c = Client(host, port, timeout=5, reconnect=True, auto_recv=True, backoff=(0.2, 1.0),
                   ping_interval=None, on_push=lambda body: None, on_connection=note)
        clients.append(c)
        c.connect().login(name, PASSWORD)
    return clients


def sigterm_baseline(cluster, clients, reconnects: list) -> list[float]:
    """SIGTERM gate1 (through the supervisor's state file pid): the reconnect times it caused."""
    start = len(reconnects)
    old = cluster.kill("gate1", signal.SIGTERM)
    cluster.wait_ready("gate1", old_pid=old, timeout=30)
    poll_for(lambda: len(reconnects) - start >= len(clients) and all(c.session_up.is_set() for c in clients),
             30, "every client back after the SIGTERM")
    return reconnects[start:]


def rolling_restart(cluster, reconnects: list) -> tuple[str, list[float]]:
    """``zonechat restart --rolling --over 2s``: its output and the reconnect times meanwhile."""
    start = len(reconnects)
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "restart", "--rolling", "-c",
                             cluster.config_path, "--over", f"{OVER:g}s", "--timeout", "60s"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = output_of(proc, 180)
    assert proc.returncode == 0, out
    return out, reconnects[start:]


def history_report(clients, convs, writers) -> faultcheck.Report:
    """Every conversation synced by one of its members, judged against every send."""
    poll_for(lambda: all(c.session_up.is_set() for c in clients), 30, "every client logged in")
    readers = {conv: clients[i] for i, pair in enumerate(convs) for conv in pair}
    history = {conv: full_history(reader, conv) for conv, reader in readers.items()}
    return faultcheck.check([s for w in writers for s in w.sends], history, [],
                            faults=("steady", "sigterm", "rolling", "after"))


def test_rolling_restart_under_load_loses_nothing_and_reconnects_at_the_drain_pace(start_cluster):
    cluster = start_cluster(OVERRIDES)
    names, convs = users_and_convs(cluster)
    reconnects: list[float] = []
    clients, workers, phase, stop = [], [], Phase(), Event()
    try:
        clients = connect_all(cluster, names, reconnects)
        for i in range(0, CLIENTS, GROUP_SIZE):
            clients[i].call("group_create", group=convs[i][1], members=names[i + 1:i + GROUP_SIZE])
        writers = [Writer(c, conv, phase) for c, pair in zip(clients, convs) for conv in pair]
        workers = [gevent.spawn(w.run, stop) for w in writers]
        gevent.sleep(1.0)
        phase.name = "sigterm"
        plain = sigterm_baseline(cluster, clients, reconnects)
        phase.name = "rolling"
        out, drained = rolling_restart(cluster, reconnects)
        phase.name = "after"
        gevent.sleep(1.0)
        stop.set()                                      # no new sends; the last ones get their acks
        gevent.joinall(workers, timeout=ACK_PATIENCE + 10, raise_error=True)
        assert all(g.dead for g in workers), "a writer did not finish"
        report = history_report(clients, convs, writers)
    finally:
        stop.set()
        gevent.killall(workers)
        for c in clients:
            c.close()
    judge(report, out, plain, drained)


def judge(report: faultcheck.Report, out: str, plain: list, drained: list) -> None:
    pace = CLIENTS / OVER
    plain_peak, drained_peak = peak_per_second(plain), peak_per_second(drained)
    print("\n" + out + faultcheck.format_table(report))
    print(f"peak reconnects/s: without drain (SIGTERM of a gate with {CLIENTS} clients) {plain_peak}; "
          f"with drain (rolling restart, --over {OVER:g}s, pace {pace:g}/s) {drained_peak}; "
          f"{len(drained)} reconnects during the rolling restart")
    assert report.failures() == 0, "\n".join(report.problems[:40])
    assert report.total("acked") == report.total("sends") and report.rows["rolling"]["acked"] > 0
    for node in ("gate1", "gate2", "dc1", "log1", "login1", "zone1", "zone2", "center1"):
        assert f"{node} " in out and "ready again" in out, out
    assert f"gate1 drained ({CLIENTS} sessions moved)" in out and f"gate2 drained ({CLIENTS} sessions moved)" in out, out
    assert len(drained) >= 2 * CLIENTS                  # everyone moved twice
    assert drained_peak <= pace * 1.3 + 1, (drained_peak, pace)   # measured: pace + 1 or 2
    assert plain_peak > drained_peak
