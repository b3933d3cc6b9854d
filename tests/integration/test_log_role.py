"""The log role: in-process (bounded backlog, stop flush) and as a real process fed by a Bus."""
import os
import select
import signal
import subprocess
import sys
import time

import msgpack
import pytest
import yaml

from cluster import config as config_mod
from cluster import keys
from log import logfile
from log import tail as logtail
from cluster.bus import Bus
from harness import free_ports, poll_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_ROLES = {"gate1": "gate", "login1": "login", "center1": "center", "zone1": "zone",
              "dc1": "dc", "log1": "log"}
TIMEOUT = 15.0


def write_config(tmp_path, rotate_bytes=1 << 20, keep_files=20, queue_max=100000) -> str:
    ports = free_ports(len(NODE_ROLES) + 2)
    nodes = {name: {"role": role, "host": "127.0.0.1", "bus_port": ports[i]}
             for i, (name, role) in enumerate(NODE_ROLES.items())}
    nodes["gate1"]["tcp_port"] = ports[-2]
    nodes["center1"]["admin_port"] = ports[-1]
    raw = {"cluster": {"data_dir": "data"}, "nodes": nodes,
           "log": {"rotate_bytes": rotate_bytes, "keep_files": keep_files, "queue_max": queue_max}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    keys.init(config_mod.load(str(path)))      # the bus is CURVE: every node needs its key
    return str(path)


def body(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def poll(check, timeout=TIMEOUT, what="condition"):
    """Call ``check`` until it returns something truthy or ``timeout`` passes."""
    return poll_for(check, timeout, what, interval=0.02)


def tail_lines(cfg, **kwargs) -> list[str]:
    lines = []
    logtail.tail(cfg.data_dir, out=lines.append, **kwargs)
    return lines


# -- the role in-process ------------------------------------------------------------------
def make_node(tmp_path, **log_conf):
    from log.node import LogNode
    cfg = config_mod.load(write_config(tmp_path, **log_conf))
    return cfg, LogNode(cfg, cfg.node("log1"))


def test_backlog_is_bounded_and_drops_are_counted(tmp_path):
    cfg, node = make_node(tmp_path, queue_max=3)
    node.writer.open()
    for i in range(5):
        node.on_record(["rec", 1000 + i, "gate1", "in", i, "alice", body(t="ping")])
    node.on_record(["rec", 2000, "gate1", "stats", {"log_drops": 7}])
    node.on_record(["rec"])
    node.shutdown()
    node.bus.close()
    stats = node.stats()
    assert stats["received"] == 7 and stats["dropped"] == 3 and stats["malformed"] == 1
    assert stats["heard_drops"] == 7
    records = list(logfile.iter_records(logfile.log_dir(cfg.data_dir)))
    assert [r.fields[0] for r in records[:3]] == [0, 1, 2]
    assert records[-1].kind == "stats" and records[-1].node == "log1"


def test_slow_disk_never_blocks_the_inbox(tmp_path):
    from gevent import monkey
    cfg, node = make_node(tmp_path, queue_max=10)
    disk = monkey.get_original("_thread", "allocate_lock")()   # a real lock: blocks the thread
    real_write = node.writer.write

    def stuck_write(chunks):
        with disk:
            real_write(chunks)

    node.setup()
    try:
        node.writer.write = stuck_write
        disk.acquire()
        node.on_record(["rec", 1, "gate1", "in", 0, "alice", body(t="ping")])
        poll(lambda: len(node.backlog) == 0, what="the writer to take the first batch")
        started = time.monotonic()
        for i in range(1, 21):
            node.on_record(["rec", 1, "gate1", "in", i, "alice", body(t="ping")])
        assert time.monotonic() - started < 0.5
        assert len(node.backlog) == 10 and node.dropped == 10
        disk.release()
        directory = logfile.log_dir(cfg.data_dir)
        poll(lambda: len(list(logfile.iter_records(directory))) == 11, what="11 records on disk")
    finally:
        if disk.locked():
            disk.release()
        node.stop()
        node.shutdown()
        node.bus.close()
        node.greenlets.kill(timeout=2)
    assert [r.fields[0] for r in logfile.iter_records(directory)][:11] == list(range(11))


# -- the role as a process ----------------------------------------------------------------
class LogProcess:
    """``python -m log --node log1 -c CFG``; waits for the ready line, never a fixed sleep."""

    def __init__(self, config_path: str, tmp_path):
        self.stderr_path = tmp_path / "log1.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "log", "--node", "log1", "-c", config_path],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        self.output = b""

    def wait_ready(self, timeout=TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b" ready on " not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"log1 not ready: {self.output!r} {self.stderr()}")
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if readable:
                self.output += os.read(self.proc.stdout.fileno(), 4096)
        return self.output.decode()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout=TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        self.proc.stdout.close()


@pytest.fixture
def log_process(tmp_path):
    started = []

    def start(**log_conf):
        cfg_path = write_config(tmp_path, **log_conf)
        proc = LogProcess(cfg_path, tmp_path)
        started.append(proc)
        assert "log log1 ready on tcp://127.0.0.1:" in proc.wait_ready()
        return config_mod.load(cfg_path), proc

    yield start
    for proc in started:
        proc.kill()


def test_records_reach_the_files_and_tail(log_process):
    cfg, proc = log_process()
    bus = Bus(cfg, "gate1")
    try:
        bus.record("in", 5, "alice", body(t="send", conv="d:alice:bob", cid="x", password="pw1"))
        bus.record("out", None, None, body(t="msg", conv="r:lobby", seq=3), 42)
        bus.record("store", "d:alice:bob", 1, "alice", "x", 1_700_000_000_000)
        bus.record("admin", "kick", {"user": "bob", "token": "tok-9"})
        bus.record("stats", {"log_drops": 4})
        bus.flush()
        lines = poll(lambda: len(tail_lines(cfg)) >= 5 and tail_lines(cfg), what="5 records")
    finally:
        bus.close()
    text = "\n".join(lines)
    assert " gate1 in alice send conv=d:alice:bob cid=x password=*** sid=5" in text
    assert " gate1 out - msg conv=r:lobby seq=3 sid=- recipients=42" in text
    assert " gate1 store alice conv=d:alice:bob seq=1 cid=x" in text
    assert "pw1" not in text and "tok-9" not in text
    alice = tail_lines(cfg, user="alice")
    assert len(alice) == 2 and all(line.split()[3] == "alice" for line in alice)
    assert proc.stop() == 0
    last = tail_lines(cfg, n=1)[0]
    assert " log1 stats - " in last and "received=5" in last and "heard_drops=4" in last


def test_rotation_under_a_burst(log_process):
    cfg, proc = log_process(rotate_bytes=4096, keep_files=3)
    bus = Bus(cfg, "gate1")
    try:
        for i in range(2000):
            bus.record("in", i, "alice", body(t="send", conv="r:lobby", cid=f"c{i}", n=i))
            if i % 50 == 49:
                bus.flush_records()     # 40 batches: one frame each, so rotation can cut
        bus.flush()
        directory = logfile.log_dir(cfg.data_dir)
        poll(lambda: any("cid=c1999 " in line for line in tail_lines(cfg, n=1)), what="last record")
    finally:
        bus.close()
    files = logfile.list_files(directory)
    assert len(files) == 3 and files[0][0] > 1
    sids = [r.fields[0] for r in logfile.iter_records(directory)]
    assert sids == list(range(sids[0], 2000))
    assert proc.stop() == 0


def test_sigterm_flushes_and_exits_zero(log_process):
    cfg, proc = log_process()
    bus = Bus(cfg, "zone1")
    try:
        bus.record("store", "r:lobby", 1, "bob", "m1", 1_700_000_000_000)
        bus.flush()
        poll(lambda: tail_lines(cfg, user="bob"), what="the first record")
        for seq in range(2, 201):
            bus.record("store", "r:lobby", seq, "bob", f"m{seq}", 1_700_000_000_000)
        bus.flush()
    finally:
        bus.close()
    assert proc.stop() == 0          # right away: whatever was received must be on disk
    assert "stopped" in proc.stderr()
    records = list(logfile.iter_records(logfile.log_dir(cfg.data_dir)))
    assert records[-1].kind == "stats" and records[-1].node == "log1"
    received = records[-1].fields[0]["received"]
    assert received >= 1
    stored = [r for r in records if r.kind == "store"]
    assert len(stored) == received and [r.fields[1] for r in stored] == list(range(1, received + 1))


def test_write_errors_drop_the_batch_and_are_counted(tmp_path):
    cfg, node = make_node(tmp_path)
    node.writer.open()

    def full_disk(chunks):
        raise OSError(28, "No space left on device")

    node.writer.write = full_disk
    node.on_record(["rec", 1, "gate1", "in", 0, "alice", body(t="ping")])
    node.on_record(["rec", 2, "gate1", "in", 1, "alice", body(t="ping")])
    node._write(node._write_batch(*node.backlog.take()))
    assert node.write_errors == 1 and node.dropped == 2 and len(node.backlog) == 0
    node.bus.close()
