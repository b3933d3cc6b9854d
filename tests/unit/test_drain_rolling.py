"""``zonechat restart --rolling``'s own parts (cluster/rolling.py), without a cluster: the
order of the nodes, where /readyz is asked, how its answers read, and that no pid is
signalled unless it is still the process the state file recorded."""
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from gevent.pywsgi import WSGIServer

import cluster  # noqa: F401
from cluster import config as config_mod
from cluster import rolling, runstate

NODES = {
    "gate2": {"role": "gate", "tcp_port": 7710}, "gate1": {"role": "gate", "tcp_port": 7700},
    "center1": {"role": "center"}, "login1": {"role": "login"}, "zone2": {"role": "zone"},
    "zone1": {"role": "zone"}, "dc1": {"role": "dc"}, "log1": {"role": "log"},
}


def config(metrics=None, tmp=None):
    raw = {"nodes": NODES, "metrics": metrics or {}, "cluster": {"data_dir": str(tmp or "data")}}
    return config_mod.from_dict(raw, os.path.join(str(tmp or "."), "config.yaml"))


def state_doc():
    """A state file's nodes, in start order (as the supervisor writes them)."""
    order = ["redis", "dc1", "log1", "login1", "zone1", "zone2", "center1", "gate1", "gate2"]
    roles = {"redis": "redis", **{n: NODES[n]["role"] for n in NODES}}
    return {"nodes": {n: {"role": roles[n], "pid": 100 + i, "state": "running"} for i, n in enumerate(order)}}


def test_the_gates_go_first_then_the_roles_in_start_order_and_never_redis():
    assert rolling.restart_plan(state_doc()) == [
        "gate1", "gate2", "dc1", "log1", "login1", "zone1", "zone2", "center1"]
    assert rolling.restart_plan(state_doc(), "zone") == ["zone1", "zone2"]
    assert rolling.restart_plan(state_doc(), "gate") == ["gate1", "gate2"]
    assert rolling.restart_plan({"nodes": {}}) == []


def test_readyz_is_asked_of_this_hosts_supervisor():
    assert rolling.readyz_url(config(), None, "gate1") == "http://127.0.0.1:7791/readyz?node=gate1"
    assert rolling.readyz_url(config(), "10.0.0.5", "zone1") == "http://10.0.0.5:7791/readyz?node=zone1"
    assert rolling.readyz_url(config({"host": "10.0.0.9", "port": 9000}), "10.0.0.5", "x") == \
        "http://10.0.0.9:9000/readyz?node=x"
    assert rolling.readyz_url(config({"host": "0.0.0.0"}), None, "x").startswith("http://127.0.0.1:7791/")
    assert rolling.readyz_url(config({"host": "::1"}), None, "x").startswith("http://[::1]:7791/")


@pytest.fixture
def readyz_server():
    """/readyz?node=up -> 200, node=down -> 503, anything else 404."""
    def app(environ, start_response):
        node = environ.get("QUERY_STRING", "").partition("node=")[2]
        status = {"up": "200 OK", "down": "503 Service Unavailable"}.get(node, "404 Not Found")
        body = b'{"ready": %s, "nodes": {}}' % (b"true" if node == "up" else b"false")
        start_response(status, [("Content-Type", "application/json")])
        return [body]
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/readyz?node="
    server.stop(timeout=1)


def test_readyz_answers_read_as_ready_not_ready_unknown_or_absent(readyz_server):
    assert rolling.probe_ready(readyz_server + "up")[0] is True
    ready, said = rolling.probe_ready(readyz_server + "down")
    assert ready is False and said.startswith("503") and '"ready": false' in said
    with pytest.raises(rolling.RollingError, match="does not know"):
        rolling.probe_ready(readyz_server + "nope")
    closed = WSGIServer(("127.0.0.1", 0), lambda e, s: [])
    closed.start()
    free = closed.server_port
    closed.stop()                                       # nothing listens there now
    assert rolling.probe_ready(f"http://127.0.0.1:{free}/readyz?node=x") == (None, "connection refused")


def test_a_pid_is_signalled_only_while_it_is_the_recorded_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ctime = runstate.create_time(child.pid)
        with pytest.raises(rolling.RollingError, match="no longer the process"):
            rolling.RollingRestart.signal_verified("zone1", child.pid, ctime - 5)
        assert child.poll() is None                       # not signalled
        rolling.RollingRestart.signal_verified("zone1", child.pid, ctime)
        assert child.wait(timeout=10) == -15              # SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_no_supervisor_no_restart(tmp_path):
    run = rolling.RollingRestart(config(tmp=tmp_path), None, 2.0, 5.0)
    with pytest.raises(rolling.RollingError, match="no supervisor runs"):
        run.plan(None)


def test_a_node_that_is_not_running_is_not_touched_and_a_timeout_names_what_readyz_said(tmp_path):
    cfg = config({"port": 1}, tmp_path)                   # nothing listens: the state file alone
    path = runstate.state_path(cfg.data_dir)
    os.makedirs(os.path.dirname(path))
    me = os.getpid()
    doc = {"pid": me, "create_time": runstate.create_time(me), "state": "ready",
           "nodes": {"zone1": {"role": "zone", "pid": None, "state": "flapping"},
                     "zone2": {"role": "zone", "pid": me, "create_time": runstate.create_time(me),
                               "state": "running"}}}
    runstate.write(path, doc)
    said = []
    run = rolling.RollingRestart(cfg, None, 2.0, 0.3, out=lambda text, err=False: said.append(text))
    with pytest.raises(rolling.RollingError, match="zone1 is flapping, not running"):
        run.restart_one("zone1")
    started = time.monotonic()
    with pytest.raises(rolling.RollingError, match="zone2 was not back and ready.*state: running, pid"):
        run.wait_back("zone2", me, time.monotonic() + 0.3)   # the same pid: not back
    assert time.monotonic() - started < 2


def test_restart_needs_rolling():
    result = CliRunner().invoke(rolling.restart, ["-c", "/nonexistent.yaml"])
    assert result.exit_code == 2 and "--rolling" in result.output
