"""The whole cluster under the real supervisor and CLI: up, status, restart, down, signals.

Real processes only; every wait polls with a timeout.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import yaml

from cluster import redis_server, runstate
from harness import REPO, RunningCluster, make_config, poll_for, zonechat

ALL = ["redis", "dc1", "log1", "login1", "zone1", "zone2", "center1", "gate1", "gate2"]


def all_gone(pids) -> bool:
    return not [pid for pid, ct in pids.items() if runstate.alive(pid, ct)]


def pids_of(doc) -> dict:
    return {pid: ct for _, pid, ct in runstate.processes(doc)}


def test_detach_status_restart_down(start_cluster):
    c = start_cluster(detach=True)
    out = zonechat("status", config=c.config_path)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [r[1] for r in rows] == ALL
    assert all(r[3] == "running" and r[5] == "0" for r in rows)
    assert [r[0] for r in rows] == ["redis", "dc", "log", "login", "zone", "zone", "center", "gate", "gate"]

    old = c.kill("zone1")
    node = c.wait_ready("zone1", old_pid=old)
    assert node["restarts"] == 1
    assert "zone zone1 ready on " in c.log_text("zone1")
    status = c.status()
    assert status["nodes"]["zone1"]["restarts"] == 1
    assert all(n["state"] == "running" for n in status["nodes"].values())

    seen = pids_of(c.state())
    seen[old] = None
    out = zonechat("down", config=c.config_path)
    assert out.returncode == 0 and "cluster stopped" in out.stdout, out.stdout + out.stderr
    assert all_gone(seen), "down returned while processes still ran"
    assert runstate.read(c.state_path) is None
    assert not redis_server.occupied("127.0.0.1", c.cfg.redis.port)
    out = zonechat("status", config=c.config_path)
    assert out.returncode == 1 and "not running" in out.stdout


def test_second_up_is_refused(cluster):
    out = zonechat("up", "--detach", config=cluster.config_path)
    assert out.returncode != 0 and "already running" in out.stderr
    assert cluster.status()["state"] == "ready"


def test_restart_helper_and_redis_restart(cluster):
    node = cluster.restart("gate2")
    assert node["state"] == "running" and node["restarts"] >= 1
    old = cluster.kill("redis")
    assert cluster.wait_ready("redis", old_pid=old)["restarts"] >= 1
    assert redis_server.ping("127.0.0.1", cluster.cfg.redis.port, cluster.redis_password)


def test_foreground_up_stops_everything_on_sigint(start_cluster):
    c = start_cluster()
    seen = pids_of(c.state())
    assert len(seen) == len(ALL) + 1
    c.proc.send_signal(signal.SIGINT)
    assert c.proc.wait(timeout=60) == 0
    assert all_gone(seen)
    log = c.log_text("supervisor")
    assert log.index("gate1 stopped") < log.index("zone1 stopped") < log.index("redis stopped")
    assert log.rstrip().endswith("cluster stopped")
    assert runstate.read(c.state_path) is None


def test_hung_child_is_killed_after_graceful_timeout(start_cluster):
    c = start_cluster({"supervisor": {"graceful_timeout": 1}})
    seen = pids_of(c.state())
    hung = c.kill("zone2", signal.SIGSTOP)       # ignores SIGTERM until it is SIGKILLed
    began = time.monotonic()
    out = zonechat("down", config=c.config_path)
    took = time.monotonic() - began
    assert out.returncode == 0, out.stdout + out.stderr
    assert all_gone(seen) and not runstate.alive(hung)
    assert 1.0 <= took < 30, took
    assert "zone2 stopped (code -9)" in c.log_text("supervisor")


def test_killed_supervisor_takes_its_children_along(start_cluster):
    c = start_cluster(detach=True)
    doc = c.state()
    nodes = {n["pid"]: n["create_time"] for n in doc["nodes"].values()}
    os.kill(doc["pid"], signal.SIGKILL)
    poll_for(lambda: all_gone(nodes), 15, "every node to die with its supervisor")
    out = zonechat("status", config=c.config_path)
    assert out.returncode == 1 and "stale" in out.stdout
    out = zonechat("down", config=c.config_path)
    assert out.returncode == 0 and runstate.read(c.state_path) is None


def test_flapping_node_waits_retry_in(start_cluster):
    c = start_cluster({"supervisor": {"restart_attempts": 1, "restart_window": 60, "retry_in": 2}})
    c.restart("zone1")
    c.kill("zone1")
    poll_for(lambda: c.node("zone1")["state"] == "flapping", 15, "zone1 flapping")
    assert zonechat("status", config=c.config_path).returncode == 3
    node = c.wait_ready("zone1", timeout=30)
    assert node["restarts"] == 2
    assert "zone1 flapping: retry in 2s" in c.log_text("supervisor")


def test_up_with_host_starts_that_hosts_share(tmp_path):
    path = make_config(str(tmp_path))
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    raw["nodes"]["gate2"]["host"] = "127.0.0.2"
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(raw, fh)
    c = RunningCluster(path)
    try:
        # a host makes no keys of its own (every host must share them): refused, naming them
        out = zonechat("up", "--detach", "--host", "127.0.0.2", config=path, timeout=90)
        assert out.returncode != 0 and "keys/public.yaml" in out.stderr and "gate2.key_secret" in out.stderr
        assert "zone1.key_secret" not in out.stderr and runstate.read(runstate.state_path(c.data_dir, "127.0.0.2")) is None
        out = zonechat("keys", "init", config=path)
        assert out.returncode == 0 and "generated key pair of node gate2" in out.stdout, out.stdout + out.stderr
        for host, expected in (("127.0.0.1", [n for n in ALL if n != "gate2"]), ("127.0.0.2", ["gate2"])):
            out = zonechat("up", "--detach", "--host", host, config=path, timeout=90)
            assert out.returncode == 0, out.stdout + out.stderr
            doc = runstate.read(runstate.state_path(c.data_dir, host))
            assert list(doc["nodes"]) == expected
            c._seen.update(pids_of(doc))
        for host in ("127.0.0.2", "127.0.0.1"):
            assert zonechat("down", "--host", host, config=path).returncode == 0
        assert not c.living()
    finally:
        for host in ("127.0.0.2", "127.0.0.1"):
            zonechat("down", "--host", host, config=path)
        c.stop()


def test_a_node_that_cannot_start_aborts_up_and_leaves_nothing(tmp_path):
    path = make_config(str(tmp_path))
    c = RunningCluster(path)
    host, port = c.gate_addrs["gate2"]
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((host, port))
    blocker.listen()
    try:
        out = zonechat("up", "--detach", config=path, timeout=90)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "gate2 exited with code" in out.stderr and "cluster stopped" in out.stderr
        assert runstate.read(c.state_path) is None
        log = c.log_text("supervisor")
        started = [int(line.split("pid ")[1].rstrip(")")) for line in log.splitlines() if " started (pid " in line]
        assert len(started) == len(ALL)
        assert not [pid for pid in started if runstate.alive(pid)]
    finally:
        blocker.close()
        c.stop()


def test_cli_chat_and_log_tail_are_wired(cluster):
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "chat", "wired_user", "--register", "-c", cluster.config_path],
        input="password1\npassword1\n/quit\n", capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr

    def logged():
        tail = zonechat("log", "tail", "--user", "wired_user", "-n", "50", config=cluster.config_path)
        return tail.returncode == 0 and "welcome" in tail.stdout
    poll_for(logged, 20, "the login of wired_user in `zonechat log tail`")
