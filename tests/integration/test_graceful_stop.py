"""Graceful stops whatever became of the supervisor's stdout (issue 13, point 4).

The real thing, not a mock: ``python -m cluster.cli up`` with its stdout piped into a real
``tee`` and both in one new process group, as a shell puts ``make up | tee log`` in one
foreground job; ``os.killpg(SIGINT)`` is the terminal's Ctrl-C. tee dies, the supervisor's
stdout becomes a closed pipe, and the stop must still go tier by tier: every
``stopped (code 0)`` in ``<data_dir>/logs/supervisor.log`` in reverse start order, Redis
shut down by its own SIGTERM handling (AOF fsync, "ready to exit"), exit code 0, nothing
left running. The pids come from the state file with their create_time
(RunningCluster.state), so a recycled pid is never taken for ours; every process started
here is SIGKILLed in ``finally`` (by pid, or by the process group we made) if still alive.

A stdout closed before the first line (nobody ever reads it) is the unit tests' case
(tests/unit/test_supervisor_output.py: the closed console dropped for good, and a real
process whose SIGPIPE would kill it without ``ignore_sigpipe``); here, the pipe closes under
a running cluster, which is what a Ctrl-C does to ``| tee``.
"""
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys

from cluster import runstate
from cluster.child import die_with_parent
from harness import REPO, START_TIMEOUT, RunningCluster, make_config, poll_for, zonechat

UP = [sys.executable, "-m", "cluster.cli", "up"]
STOP_TIMEOUT = 30.0
# reverse of START_ORDER; the nodes of one tier stop in parallel, the tiers one after another
STOP_TIERS = [("gate1", "gate2"), ("center1",), ("zone1", "zone2"), ("login1",), ("log1",), ("dc1",), ("redis",)]
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (.*)$")


def read(path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def spawn_up(config: str, stdout, stderr_path, **group) -> subprocess.Popen:
    """The foreground supervisor, our child (SIGKILLed with pytest), stderr kept for failures."""
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(UP + ["-c", config], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=err, preexec_fn=die_with_parent(os.getpid()), **group)


def wait_for_exit(proc: subprocess.Popen, what: str, stderr_path) -> int:
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} still runs {STOP_TIMEOUT:g}s after SIGINT:\n{read(stderr_path)}") from None


@contextlib.contextmanager
def cleanup(running: RunningCluster, procs: list, pgid_box: list):
    """Whatever the test did: SIGKILL our process group, our children, the cluster's pids."""
    try:
        yield
    finally:
        for pgid in pgid_box:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for pid in running.living():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def supervisor_lines(running: RunningCluster) -> list[str]:
    """supervisor.log without its timestamps; every line must have one."""
    text = running.log_text("supervisor")
    lines = text.splitlines()
    unstamped = [line for line in lines if not STAMPED.match(line)]
    assert lines and not unstamped, f"lines without a timestamp: {unstamped[:5]}\n{text}"
    return [STAMPED.match(line).group(1) for line in lines]


def assert_stopped_in_order(running: RunningCluster) -> None:
    lines = supervisor_lines(running)
    log = "\n".join(lines)
    assert "cluster ready" in lines and lines[-1] == "cluster stopped", log
    after = lines[lines.index("stopping") + 1:]
    stopped = [line.split()[0] for line in after if line.endswith(" stopped (code 0)")]
    assert sorted(stopped) == sorted(n for tier in STOP_TIERS for n in tier), log
    rank = {name: i for i, tier in enumerate(STOP_TIERS) for name in tier}
    assert [rank[n] for n in stopped] == sorted(rank[n] for n in stopped), f"out of tier order: {stopped}"
    assert not [line for line in after if " stopped (code " in line and not line.endswith("(code 0)")], log


def assert_every_node_stopped_cleanly(running: RunningCluster, seen: dict) -> None:
    redis_log = running.log_text("redis")
    assert "Received SIGTERM" in redis_log and "ready to exit" in redis_log, redis_log[-2000:]
    assert redis_log.index("Received SIGTERM") < redis_log.index("ready to exit")
    for name, node in running.cfg.nodes.items():
        text = running.log_text(name)
        for word in ("stopping", "stopped"):
            assert f"{node.role} {name} {word}" in text, f"{name}.log lacks '{word}':\n{text[-2000:]}"
    poll_for(lambda: not [p for p, ct in seen.items() if runstate.alive(p, ct)], 10, "every process gone")
    assert runstate.read(running.state_path) is None


def wait_until_ready(running: RunningCluster, sup: subprocess.Popen, looks_ready) -> dict:
    """The state file of a ready cluster (every pid and create_time), failing fast if up died."""
    poll_for(lambda: sup.poll() is not None or looks_ready(), START_TIMEOUT, "cluster ready")
    assert sup.poll() is None, f"zonechat up exited with {sup.returncode}:\n{running.log_text('supervisor')}"
    doc = poll_for(lambda: (d := running.state()) and d.get("state") == "ready" and d, 10, "state ready")
    return {pid: ct for _, pid, ct in runstate.processes(doc)}


def test_ctrl_c_under_a_pipe_to_tee_stops_tier_by_tier(tmp_path):
    running = RunningCluster(make_config(str(tmp_path)))
    tee_file, err = tmp_path / "tee.out", tmp_path / "supervisor.stderr"
    procs, group = [], []
    with cleanup(running, procs, group):
        sup = spawn_up(running.config_path, subprocess.PIPE, err, process_group=0)
        procs.append(sup)
        group.append(sup.pid)                   # sup leads the group: tee joins it, like a shell job
        tee = subprocess.Popen(["tee", str(tee_file)], stdin=sup.stdout, stdout=subprocess.DEVNULL,
                               process_group=sup.pid, preexec_fn=die_with_parent(os.getpid()))
        procs.append(tee)
        sup.stdout.close()                      # tee alone reads: when it dies, the pipe is closed
        seen = wait_until_ready(running, sup, lambda: "\ncluster ready\n" in read(tee_file))

        os.killpg(sup.pid, signal.SIGINT)       # Ctrl-C: the whole foreground job
        assert wait_for_exit(sup, "the supervisor", err) == 0, read(err)
        assert tee.wait(timeout=STOP_TIMEOUT) == -signal.SIGINT
        assert "cluster stopped" not in read(tee_file), "tee outlived the stop: no closed pipe was tested"
        assert_stopped_in_order(running)
        assert_every_node_stopped_cleanly(running, seen)


def test_detached_up_with_host_owns_its_log_and_keeps_the_console_apart(tmp_path):
    """``up --detach --host H``: supervisor-H.log is written once per line by the supervisor,
    supervisor-H.out holds its console; an early exit still shows that console's tail."""
    running = RunningCluster(make_config(str(tmp_path)))
    host, port = "127.0.0.1", running.cfg.redis.port
    blocker = socket.socket()                   # Redis cannot start: up fails fast, in the background
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((host, port))
    blocker.listen()
    try:
        assert zonechat("keys", "init", config=running.config_path).returncode == 0
        out = zonechat("up", "--detach", "--host", host, config=running.config_path, timeout=START_TIMEOUT)
        assert out.returncode == 1, out.stdout + out.stderr
        why = f"redis cannot start: something already listens on {host}:{port}"
        assert why in out.stderr and "cluster stopped" in out.stderr, out.stderr
        logs = os.path.join(running.data_dir, "logs")
        assert not os.path.exists(os.path.join(logs, "supervisor.log"))
        stamped = read(os.path.join(logs, f"supervisor-{host}.log")).splitlines()
        assert stamped and all(STAMPED.match(line) for line in stamped), stamped
        plain = [STAMPED.match(line).group(1) for line in stamped]
        assert len([line for line in plain if line.startswith(why)]) == 1, plain
        assert plain[-1] == "cluster stopped", plain
        console = read(os.path.join(logs, f"supervisor-{host}.out")).splitlines()
        assert [line for line in console if line.startswith(why)], console
        assert not [line for line in console if STAMPED.match(line)], console
    finally:
        blocker.close()
        zonechat("down", "--host", host, config=running.config_path)
        running.stop()
