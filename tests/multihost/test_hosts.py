"""Issue 12, point 2: a cluster spread over three real network hosts, and a cut link.

Three network namespaces joined by a bridge (tests/multihost/netns.py): ``edge`` runs the
gates, ``chat`` login, center, the zones, dc and log, ``data`` the managed Redis. One
multi-host config.yaml (the same file on each host, each host its own data_dir beside it)
is started with ``zonechat up --host <addr>`` in each namespace; the keys are made once
(``zonechat keys init``) and each host gets the files it needs, as docs/scaling.md says.
A client inside ``edge`` (tests/multihost/chatter.py) chats end to end; then the chat
host's link is taken down for longer than a request's deadline and brought back: sends
answer ``unavailable`` while it is cut and are acked again after, and the final history
has every acked message once, at its seq, in order. Namespaces and processes are removed
in a ``finally``. Needs root (``ip netns``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

from cluster import config as config_mod
from cluster import keys, runstate
from harness import REPO, TEST_DEFAULTS, _merge, missing, poll_for
from multihost.netns import Hosts

pytestmark = pytest.mark.multihost

ADDRS = {"edge": "10.77.0.1", "chat": "10.77.0.2", "data": "10.77.0.3"}
ROLES_ON = {"edge": ("gate1", "gate2"), "chat": ("login1", "center1", "zone1", "zone2", "dc1", "log1"),
            "data": ()}
REQUEST_TIMEOUT = 2.0       # the gates' request deadline (gate.request_timeout)
CUT = 3 * REQUEST_TIMEOUT   # seconds the chat host is cut off: longer than any deadline
CHAT_SECONDS = 14.0         # how long the client sends: before, during and after the cut
UP_TIMEOUT = 120


def config() -> dict:
    nodes = {
        "gate1": {"role": "gate", "host": ADDRS["edge"], "bus_port": 7801, "tcp_port": 7001, "ws_port": 7101},
        "gate2": {"role": "gate", "host": ADDRS["edge"], "bus_port": 7802, "tcp_port": 7002, "ws_port": 7102},
        "login1": {"role": "login", "host": ADDRS["chat"], "bus_port": 7803},
        "center1": {"role": "center", "host": ADDRS["chat"], "bus_port": 7804, "admin_port": 7790},
        "zone1": {"role": "zone", "host": ADDRS["chat"], "bus_port": 7805},
        "zone2": {"role": "zone", "host": ADDRS["chat"], "bus_port": 7806},
        "dc1": {"role": "dc", "host": ADDRS["chat"], "bus_port": 7807},
        "log1": {"role": "log", "host": ADDRS["chat"], "bus_port": 7808},
    }
    return _merge(TEST_DEFAULTS, {"nodes": nodes, "redis": {"host": ADDRS["data"], "port": 7379},
                                  "metrics": {"port": 7791}, "gate": {"request_timeout": REQUEST_TIMEOUT}})


def host_configs(tmp_path) -> dict[str, str]:
    """The one config, written beside each host's own data_dir."""
    paths = {}
    for host in ADDRS:
        directory = tmp_path / host
        directory.mkdir()
        paths[host] = str(directory / "config.yaml")
        with open(paths[host], "w", encoding="utf-8") as fh:
            yaml.safe_dump(config(), fh, sort_keys=False)
    return paths


def share_keys(paths: dict[str, str]) -> None:
    """``zonechat keys init`` once (on edge's copy), then each host its files, 0600 kept."""
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "keys", "init", "-c", paths["edge"]],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    source = config_mod.load(paths["edge"])
    for host, path in paths.items():
        if host == "edge":
            continue
        target = config_mod.load(path)
        os.makedirs(keys.keys_dir(target), mode=0o700, exist_ok=True)
        wanted = ["public.yaml", "redis.pass"] + [f"{n}.key_secret" for n in ROLES_ON[host]]
        for name in wanted:
            shutil.copy2(os.path.join(keys.keys_dir(source), name), os.path.join(keys.keys_dir(target), name))
        shutil.copy2(os.path.join(source.data_dir, "secret"), os.path.join(target.data_dir, "secret"))


def up(hosts: Hosts, host: str, path: str) -> None:
    out = hosts.run(host, [sys.executable, "-m", "cluster.cli", "up", "--detach", "--host", ADDRS[host],
                           "-c", path], cwd=REPO, capture_output=True, text=True, timeout=UP_TIMEOUT)
    assert out.returncode == 0 and "cluster ready" in out.stdout, f"{host}: {out.stdout}{out.stderr}"


def down(hosts: Hosts, paths: dict[str, str]) -> None:
    """``zonechat down`` on every host, then SIGKILL by pid whatever its state file still names."""
    for host in ("edge", "chat", "data"):
        cfg = config_mod.load(paths[host])
        doc = runstate.read(runstate.state_path(cfg.data_dir, ADDRS[host]))
        hosts.run(host, [sys.executable, "-m", "cluster.cli", "down", "--host", ADDRS[host], "-c", paths[host]],
                  cwd=REPO, capture_output=True, timeout=90)
        for _, pid, ctime in runstate.processes(doc) if doc else ():
            if runstate.alive(pid, ctime):
                os.kill(pid, 9)


class Lines:
    """The chatter's JSON lines, read as they come."""

    def __init__(self, proc: subprocess.Popen):
        self.seen: list[dict] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            try:
                self.seen.append(json.loads(line))
            except ValueError:
                pass

    def acks(self) -> list[dict]:
        return [e for e in self.seen if "ack" in e]

    def find(self, key: str):
        return next((e[key] for e in self.seen if key in e), None)


def test_three_hosts_chat_and_survive_a_cut_link(tmp_path):
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing("network namespaces need root and iproute2 (ip netns)")
    paths = host_configs(tmp_path)
    share_keys(paths)
    hosts = Hosts(ADDRS)
    hosts.create()
    proc = None
    try:
        for host in ("data", "chat", "edge"):
            up(hosts, host, paths[host])
        gates = [f"{ADDRS['edge']}:7001", f"{ADDRS['edge']}:7002"]
        proc = hosts.popen("edge", [sys.executable, "tests/multihost/chatter.py", *gates, str(CHAT_SECONDS)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=REPO))
        lines = Lines(proc)
        poll_for(lambda: len(lines.acks()) >= 10, 60, "10 messages acked across the hosts")
        hosts.cut("chat")
        cut_at = time.time()
        time.sleep(CUT)           # the outage itself: the length of the cut is the test's input
        hosts.heal("chat")
        healed_at = time.time()
        assert proc.wait(timeout=CHAT_SECONDS + 120) == 0, proc.stderr.read()
        check(lines, cut_at, healed_at)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            down(hosts, paths)
        finally:
            hosts.remove()


def check(lines: Lines, cut_at: float, healed_at: float) -> None:
    errors = [e for e in lines.seen if "error" in e]
    assert any(cut_at <= e["t"] <= healed_at + REQUEST_TIMEOUT for e in errors if e["error"] == "unavailable"), \
        f"no send answered unavailable while the chat host was cut: {errors[:5]}"
    assert any(e["t"] > healed_at for e in lines.acks()), "no send acked after the link came back"
    acked = {e["ack"]: e["seq"] for e in lines.acks()}
    history = lines.find("history")
    assert history is not None, lines.seen[-3:]
    seqs = [seq for seq, _ in history]
    cids = [cid for _, cid in history]
    assert seqs == sorted(set(seqs)) and len(cids) == len(set(cids)), "a seq or a message twice, or out of order"
    by_seq = dict(history)
    lost = {cid: seq for cid, seq in acked.items() if by_seq.get(seq) != cid}
    assert not lost, f"acked but not in the history at their seq: {list(lost.items())[:5]}"
    order = [cid for cid in cids if cid in acked]
    assert order == sorted(order), "acked messages out of the order they were sent"
    back = min(e["t"] for e in lines.acks() if e["t"] > healed_at) - healed_at
    print(f"\nchat host cut {healed_at - cut_at:.1f}s: {sum(1 for e in errors if e['error'] == 'unavailable')} "
          f"unavailable answers, first ack {back:.1f}s after the link came back; {len(acked)} acked, "
          f"history {len(history)} messages")
