"""Issue 14, point 5: the CLI's adoption basics against a real cluster.

``zonechat --version``; the addresses printed after ``cluster ready`` by ``zonechat up
--detach`` (and by the supervisor itself, in its log) and that they answer; ``zonechat
admin`` in sentences with readable times on a terminal (a real pseudo-terminal) and JSON
in a pipe; bare room and group names; ``zonechat log tail --kind`` and ``--follow``
across rotation, stopped by SIGTERM and SIGINT. The cluster is started detached, once for
the module, with small log files so that following has to cross rotations.
"""
from __future__ import annotations

import datetime
import os
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib import metadata

import pytest

from cluster import cli
from cluster.admin import clock
from cluster.convs import dm
from harness import REPO, START_TIMEOUT, RunningCluster, make_config, zonechat
from kit import Raw, admin_cli, fresh, wait_for
from log import logfile

CLI = [sys.executable, "-m", "cluster.cli"]
LINE_TIMEOUT = 30.0          # seconds for an expected line of a running command
ROTATE_BYTES = 4096
COUNT = 30                   # messages sent while following (under the gate's burst of 40)


@pytest.fixture(scope="module")
def detached(tmp_path_factory):
    """(RunningCluster, stdout of ``zonechat up --detach``); stopped after the module."""
    running = RunningCluster(make_config(str(tmp_path_factory.mktemp("cluster")),
                                         {"log": {"rotate_bytes": ROTATE_BYTES, "keep_files": 50}}))
    try:
        out = zonechat("up", "--detach", config=running.config_path, timeout=START_TIMEOUT)
        running.state()
        assert out.returncode == 0, out.stdout + out.stderr + running.log_text("supervisor")
        yield running, out.stdout
    finally:
        running.stop()


@pytest.fixture(scope="module")
def cluster(detached):
    """This module's cluster (the ``clients`` fixture uses it)."""
    return detached[0]


# -- helpers ---------------------------------------------------------------------------------
class Lines:
    """The stdout of a running process, line by line, each read with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.buffer, self.seen = proc, b"", []

    def until(self, pred, what: str, timeout: float = LINE_TIMEOUT) -> str:
        """Read lines until one satisfies ``pred``; every line read lands in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                self.seen.append(raw.decode("utf-8", "replace").rstrip("\r"))
                if pred(self.seen[-1]):
                    return self.seen[-1]
            left = deadline - time.monotonic()
            assert left > 0, f"no line with {what} after {timeout:g}s; got {self.seen}"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            assert chunk or not ready, f"the process ended before {what}; got {self.seen}"
            self.buffer += chunk


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def end(proc: subprocess.Popen) -> None:
    """Make sure a process this test started is gone (SIGKILL by pid if still running)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=LINE_TIMEOUT)
    proc.stdout.close()


def on_terminal(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as at a shell: (code, output)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*CLI, *args], cwd=REPO, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"{args} did not finish in {timeout:g}s: {b''.join(chunks)!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:              # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=timeout)
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


def admin_tty(cluster, *args: str) -> str:
    code, text = on_terminal("admin", "-c", cluster.config_path, *args)
    assert code == 0, text
    return text


def human(cluster, *args: str) -> str:
    return admin_cli(cluster, *args, "--human").stdout


def utc_of(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()


# -- --version -------------------------------------------------------------------------------
def test_version_comes_from_the_package_metadata():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        declared = tomllib.load(fh)["project"]["version"]
    assert metadata.version("zonechat") == declared
    script = os.path.join(os.path.dirname(sys.executable), "zonechat")
    for argv in ([*CLI, "--version"], [script, "--version"]):
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stdout) == (0, f"zonechat {declared}\n"), out.stderr


def test_version_falls_back_to_pyproject_without_metadata(tmp_path):
    assert cli.package_version("zonechat-not-installed") == metadata.version("zonechat")
    assert cli.pyproject_version(str(tmp_path / "missing.toml")) == "unknown"
    (tmp_path / "bad.toml").write_text("[project]\nname = 'x'\n")
    assert cli.pyproject_version(str(tmp_path / "bad.toml")) == "unknown"


# -- the lines after `cluster ready` -----------------------------------------------------------
def expected_addresses(cfg) -> list[str]:
    gates = sorted(cfg.nodes_of("gate"), key=lambda n: n.name)
    center = cfg.nodes_of("center")[0]
    return ([f"http://127.0.0.1:{g.ws_port}/" for g in gates]
            + [f"http://127.0.0.1:{center.admin_port}/ops"]
            + [f"127.0.0.1:{g.tcp_port}" for g in gates])


def address_of(line: str) -> str:
    return line.split()[-2]


def after_ready(text: str, ready_prefix: str) -> list[str]:
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(ready_prefix)]
    assert starts, text
    return lines[starts[-1] + 1:]


def test_up_detach_prints_the_addresses_after_cluster_ready(detached):
    running, stdout = detached
    assert re.search(r"^cluster ready \(supervisor pid \d+, log .+\)$", stdout, re.M), stdout
    want = expected_addresses(running.cfg)
    printed = after_ready(stdout, "cluster ready")
    assert [address_of(line) for line in printed] == want, stdout
    assert printed[0].split()[:2] == ["chat", "page"] and printed[2].split()[:2] == ["ops", "page"]
    assert printed[3].split()[0] == "TCP" and printed[3].endswith("(gate1)")
    # the supervisor prints them too (the foreground path), right after its exact ready line
    with open(os.path.join(running.data_dir, "logs", "supervisor.out"), encoding="utf-8") as fh:
        log = fh.read()                 # its console (plain lines); supervisor.log is timestamped
    assert "\ncluster ready\n" in log
    assert [address_of(line) for line in after_ready(log, "cluster ready")[:len(want)]] == want


def test_the_printed_addresses_answer(detached):
    running, stdout = detached
    printed = [address_of(line) for line in after_ready(stdout, "cluster ready")]
    for url in printed[:3]:
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html"), url
    for addr in printed[3:]:
        host, port = addr.rsplit(":", 1)
        with Raw((host, int(port))) as conn:
            assert conn.request("ping")["t"] == "pong"


# -- zonechat admin ----------------------------------------------------------------------------
def test_mute_on_a_terminal_says_until_when_and_a_pipe_still_gets_json(cluster, clients):
    u = clients.user()
    before = time.time()
    text = admin_tty(cluster, "mute", u.user, "--for", "10m")
    match = re.fullmatch(rf"{u.user} muted until (\S+ \S+) UTC \(in 10m\)\n", text)
    assert match, text
    assert before + 600 - 2 <= utc_of(match.group(1)) <= time.time() + 600 + 1
    conv = dm(u.user, clients.register())
    wait_for(lambda: u.request("send", conv=conv, cid=fresh("c"), body="x").get("code") == "muted",
             "the mute applied", timeout=5)
    assert admin_tty(cluster, "unmute", u.user) == f"{u.user} unmuted\n"
    piped = admin_cli(cluster, "mute", u.user, "--for", "30s")           # stdout is a pipe here
    assert '"until": ' in piped.stdout and piped.stdout.lstrip().startswith("{")
    assert admin_cli(cluster, "unmute", u.user, "--json").stdout.count('"until": 0') == 1


def test_token_on_a_terminal_shows_the_token_then_its_expiry(cluster, clients):
    name = clients.register()
    token, expiry = admin_tty(cluster, "token", name).splitlines()
    assert re.fullmatch(rf"login token for {name}, expires \S+ \S+ UTC \(in 1d\)", expiry), expiry
    c = clients.connect(gate=1)
    assert c.login(name, token=token)["user"] == name


def test_broadcast_answers_the_seq_and_time_clients_see(cluster, clients):
    listener = clients.user(gate=1)
    text = human(cluster, "broadcast", "maintenance soon")
    match = re.fullmatch(r"sent to sys: seq (\d+) at (\d\d:\d\d:\d\d UTC)\n", text)
    assert match, text
    got = [m for m in listener.wait_msgs("sys", 1) if m["body"] == "maintenance soon"][0]
    assert (got["seq"], clock(got["ts"])) == (int(match.group(1)), match.group(2))


def test_a_bare_name_posts_to_that_room(cluster, clients):
    room = fresh("lobby")
    member = clients.user()
    member.join(f"r:{room}")
    text = human(cluster, "post", room, "welcome in")
    assert re.fullmatch(rf"sent to r:{room}: seq \d+ at \d\d:\d\d:\d\d UTC\n", text), text
    got = member.wait_msgs(f"r:{room}", 1)[-1]
    assert (got["from"], got["body"]) == ("system", "welcome in")
    explicit = dm(member.user, clients.register())                   # ids work as before
    assert human(cluster, "post", explicit, "hi").startswith(f"sent to {explicit}: seq 1 at ")


def test_slow_and_dups_take_a_bare_room_name(cluster, clients):
    room = fresh("lobby")
    a = clients.user()
    a.join(f"r:{room}")
    assert human(cluster, "slow", room, "10") == f"r:{room}: slow mode 10s, duplicate suppression off\n"
    a.send(f"r:{room}", "first")
    wait_for(lambda: a.request("send", conv=f"r:{room}", cid=fresh("c"), body="more").get("code")
             == "rate_limited", "slow mode on the room", timeout=5)
    assert human(cluster, "dups", room, "30") == f"r:{room}: slow mode 10s, duplicate suppression 30s\n"
    assert human(cluster, "slow", f"r:{room}", "0") == f"r:{room}: slow mode off, duplicate suppression 30s\n"
    refused = admin_cli(cluster, "slow", f"g:{room}", "5", check=False)
    assert refused.returncode != 0 and "room id" in refused.stderr


def test_roster_takes_a_bare_group_name(cluster, clients):
    team = fresh("team")
    owner, member = clients.user(), clients.user(gate=1)
    text = human(cluster, "roster", team, owner.user, member.user)
    assert text == f"g:{team}: owner {owner.user}, members {member.user}\n"
    assert member.send(f"g:{team}", "hello team")["t"] == "ack"
    assert owner.wait_msgs(f"g:{team}", 1)[-1]["body"] == "hello team"


def test_kick_reload_stats_ban_in_sentences(cluster, clients):
    u = clients.user()
    assert human(cluster, "kick", u.user) == f"{u.user} kicked\n"
    ghost = fresh("nobody")
    assert human(cluster, "kick", ghost) == f"{ghost} is not online: nobody kicked\n"
    assert human(cluster, "reload") == "word filter reloaded on 2 zones\n"
    stats = human(cluster, "stats").splitlines()
    assert "node center1" in stats and any(re.fullmatch(r"online \d+", line) for line in stats), stats
    assert human(cluster, "ban", u.user, "--reason", "spam") == f"{u.user} banned: spam\n"
    assert human(cluster, "unban", u.user) == f"{u.user} unbanned\n"


# -- zonechat log tail ------------------------------------------------------------------------
def tail(cluster, *args: str) -> list[str]:
    out = zonechat("log", "tail", *args, config=cluster.config_path)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_log_tail_kind_filters_and_hides_ping_pong(cluster, clients):
    a = clients.user()
    conv = dm(a.user, clients.register())
    a.ping()
    a.send(conv, "kinds", cid=fresh("kinds"))
    a.ping()
    wait_for(lambda: any(f"{a.user} pong " in line for line in tail(cluster, "-u", a.user, "--all", "-n", "50")),
             "the pong on disk", timeout=15, interval=0.2)
    mine = tail(cluster, "-u", a.user, "-n", "200")
    assert mine and not any(" ping " in line or " pong " in line for line in mine)
    stores = tail(cluster, "-u", a.user, "-n", "200", "--kind", "store")
    assert len(stores) == 1 and f"conv={conv}" in stores[0] and " store " in stores[0]
    both = tail(cluster, "-u", a.user, "-n", "200", "-k", "store", "-k", "in")
    assert {line.split()[2] for line in both} == {"store", "in"}


def cid_of(line: str) -> str | None:
    found = re.search(r" cid=(\S+)", line)
    return found.group(1) if found else None


def test_log_tail_follow_prints_new_records_across_rotation_until_sigterm(cluster, clients):
    a = clients.user()
    conv = dm(a.user, clients.register())
    tag = fresh("fw")
    a.send(conv, "before", cid=f"{tag}-0")
    wait_for(lambda: any(f"cid={tag}-0" in line for line in tail(cluster, "-k", "store", "-u", a.user)),
             "the first store record on disk", timeout=15, interval=0.2)
    files_before = logfile.list_files(logfile.log_dir(cluster.data_dir))[-1][0]
    proc = spawn("log", "tail", "-f", "-k", "store", "-u", a.user, "-n", "1", "-c", cluster.config_path)
    try:
        lines = Lines(proc)
        lines.until(lambda line: cid_of(line) == f"{tag}-0", "the tail's record")
        for i in range(1, COUNT + 1):                     # ~15 KB of in, out and store records
            a.send(conv, f"message {i} " + "x" * 300, cid=f"{tag}-{i}")
        lines.until(lambda line: cid_of(line) == f"{tag}-{COUNT}", "the last message")
        assert logfile.list_files(logfile.log_dir(cluster.data_dir))[-1][0] > files_before + 1  # rotated
        cids = [cid_of(line) for line in lines.seen]
        assert cids == [f"{tag}-{i}" for i in range(COUNT + 1)]         # none missed, none twice
        assert all(line.split()[2:4] == ["store", a.user] for line in lines.seen)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=LINE_TIMEOUT) == 0
    finally:
        end(proc)


def test_log_tail_follow_stops_on_ctrl_c(cluster):
    proc = spawn("log", "tail", "--follow", "--all", "-n", "1", "-c", cluster.config_path)
    try:
        Lines(proc).until(lambda line: line.strip() != "", "the last record")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=LINE_TIMEOUT) == 0
        assert b"Traceback" not in proc.stdout.read()
    finally:
        end(proc)
