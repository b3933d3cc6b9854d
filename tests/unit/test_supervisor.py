"""The supervisor's pure logic: restart backoff, flapping window, start order, state file."""
import os

import pytest

from cluster import config as config_mod
from cluster import redis_server, runstate
from cluster.supervisor import START_ORDER, RestartPolicy, SupervisorError, build_tiers

NODES = {
    "gate2": {"role": "gate", "host": "10.0.0.2", "bus_port": 7802, "tcp_port": 7710},
    "gate1": {"role": "gate", "host": "10.0.0.1", "bus_port": 7801, "tcp_port": 7700},
    "login1": {"role": "login", "host": "10.0.0.1", "bus_port": 7803},
    "center1": {"role": "center", "host": "10.0.0.1", "bus_port": 7804},
    "zone2": {"role": "zone", "host": "10.0.0.3", "bus_port": 7806},
    "zone1": {"role": "zone", "host": "10.0.0.1", "bus_port": 7805},
    "dc1": {"role": "dc", "host": "10.0.0.1", "bus_port": 7807},
    "log1": {"role": "log", "host": "10.0.0.1", "bus_port": 7808},
}


def make_cfg(**redis):
    doc = {"nodes": NODES, "redis": {"host": "10.0.0.1", **redis}}
    return config_mod.from_dict(doc, path="/srv/zonechat/config.yaml")


# -- RestartPolicy ----------------------------------------------------------------------
def test_backoff_doubles_then_caps():
    policy = RestartPolicy(attempts=10, window=1000, retry_in=30, base=0.25, cap=2.0)
    delays = [policy.plan(now=i)[1] for i in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_more_than_attempts_in_window_is_flapping():
    policy = RestartPolicy(attempts=3, window=60, retry_in=30)
    assert [policy.plan(now=t)[0] for t in (0, 1, 2)] == ["backoff"] * 3
    assert policy.plan(now=3) == ("flapping", 30.0)


def test_after_flapping_the_count_starts_over():
    policy = RestartPolicy(attempts=2, window=60, retry_in=30)
    policy.plan(0), policy.plan(1)
    assert policy.plan(2)[0] == "flapping"
    # the retry at t=32 counts as one restart: one more backoff, then flapping again
    assert policy.plan(40)[0] == "backoff"
    assert policy.plan(41)[0] == "flapping"


def test_restarts_older_than_the_window_are_forgotten():
    policy = RestartPolicy(attempts=2, window=10, retry_in=30, base=1, cap=100)
    assert policy.plan(0) == ("backoff", 1)
    assert policy.plan(5) == ("backoff", 2)
    assert policy.plan(10.5) == ("backoff", 2)    # t=0 left the window: one recent restart
    assert policy.plan(21) == ("backoff", 1)      # a stable stretch resets the backoff


def test_zero_attempts_means_every_exit_is_flapping():
    assert RestartPolicy(attempts=0, window=60, retry_in=5).plan(0) == ("flapping", 5.0)


def test_policy_reads_the_config_defaults():
    sup = make_cfg().supervisor
    policy = RestartPolicy(sup.restart_attempts, sup.restart_window, sup.retry_in)
    states = [policy.plan(now=t)[0] for t in range(6)]
    assert states == ["backoff"] * 5 + ["flapping"]


# -- build_tiers ------------------------------------------------------------------------
def names(tiers):
    return [[p.name for p in tier] for tier in tiers]


def test_tiers_follow_the_readiness_order():
    tiers = build_tiers(make_cfg(), python="/py")
    assert names(tiers) == [["redis"], ["dc1"], ["log1"], ["login1"], ["zone1", "zone2"],
                            ["center1"], ["gate1", "gate2"]]
    assert [t[0].role for t in tiers] == list(START_ORDER)


def test_node_argv_and_ready_line():
    zone = build_tiers(make_cfg(), python="/py")[4][0]
    assert zone.argv == ("/py", "-m", "zone", "--node", "zone1", "-c", "/srv/zonechat/config.yaml")
    assert zone.ready_prefix == "zone zone1 ready on "
    assert zone.probe is None


def test_host_filter_keeps_that_hosts_share():
    assert names(build_tiers(make_cfg(), host="10.0.0.2")) == [["gate2"]]
    assert names(build_tiers(make_cfg(), host="10.0.0.3")) == [["zone2"]]
    first = names(build_tiers(make_cfg(), host="10.0.0.1"))
    assert first[0] == ["redis"] and ["zone1"] in first and ["gate1"] in first


def test_a_host_with_nothing_to_run_is_an_error():
    with pytest.raises(SupervisorError, match="10.9.9.9"):
        build_tiers(make_cfg(), host="10.9.9.9")


def test_external_redis_is_not_started():
    cfg = make_cfg(managed=False, url="redis://db:6379/0")
    assert "redis" not in [p.name for tier in build_tiers(cfg) for p in tier]


def test_managed_redis_command():
    cfg = make_cfg(port=7400, appendfsync="always")
    redis = build_tiers(cfg, python="/py")[0][0]
    argv = list(redis.argv)
    assert os.access(argv[0], os.X_OK)
    assert argv[1] == os.path.join(cfg.data_dir, "keys", "redis.conf")   # the password file
    opts = dict(zip(argv[2::2], argv[3::2]))
    assert opts["--port"] == "7400" and opts["--bind"] == "10.0.0.1"
    assert opts["--appendonly"] == "yes" and opts["--appendfsync"] == "always"
    assert opts["--daemonize"] == "no" and opts["--save"] == ""
    assert opts["--auto-aof-rewrite-min-size"] == "1024mb" and opts["--auto-aof-rewrite-percentage"] == "100"
    assert opts["--dir"] == os.path.join(cfg.data_dir, "redis")
    assert redis.probe == ("10.0.0.1", 7400, None)        # no password file made yet


def test_redis_binary_is_found_without_setup():
    binary = redis_server.find_binary()
    assert os.path.basename(binary) == "redis-server" and os.access(binary, os.X_OK)


def test_ping_of_a_closed_port_is_false():
    assert redis_server.ping("127.0.0.1", 1) is False


# -- state file -------------------------------------------------------------------------
def test_state_file_paths(tmp_path):
    assert runstate.state_path(str(tmp_path)) == str(tmp_path / "run" / "supervisor.json")
    assert runstate.state_path(str(tmp_path), "fe80::1").endswith("supervisor-fe80__1.json")


def test_state_file_round_trip(tmp_path):
    path = str(tmp_path / "state.json")
    assert runstate.read(path) is None
    doc = {"pid": 1, "nodes": {"zone1": {"pid": 2, "create_time": 3.0}}}
    runstate.write(path, doc)
    assert runstate.read(path) == doc
    assert runstate.processes(doc) == [("supervisor", 1, None), ("zone1", 2, 3.0)]
    (tmp_path / "state.json").write_text("{torn")
    assert runstate.read(path) is None
    runstate.remove(path)
    runstate.remove(path)


def test_only_one_supervisor_per_state_file(tmp_path):
    path = str(tmp_path / "state.json")
    runstate.write(path, {"pid": 4242})
    with runstate.exclusive(path):
        with pytest.raises(runstate.AlreadyRunning, match="4242"):
            with runstate.exclusive(path):
                pass
    with runstate.exclusive(path):
        pass


def test_alive_checks_the_start_time():
    me = os.getpid()
    ct = runstate.create_time(me)
    assert runstate.alive(me) and runstate.alive(me, ct)
    assert not runstate.alive(me, ct - 100)      # same pid, another process: not ours
    assert not runstate.alive(None) and not runstate.alive(0)
