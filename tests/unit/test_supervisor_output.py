"""cluster.output: the supervisor's lines, timestamped in a file always, on stdout best-effort.

Real pipes and files: a closed pipe is a closed pipe (EPIPE), not a mock raising one.
"""
import os
import re
import signal
import subprocess
import sys

import pytest
from gevent.monkey import get_original

from cluster import output, runstate
from cluster.child import LOG_KEEP_BYTES, PROJECT_ROOT
from cluster.output import SupervisorOutput

# gevent's os.close defers closing a pipe to the hub's next loop turn once a hub exists
# (as after other tests); the reader's end must be gone at once, as when tee exits
close_now = get_original("os", "close")

T0 = 1796284201.123456          # 2026-12-03T07:50:01.123Z
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")


@pytest.fixture
def pipe():
    """[read fd, write fd]; whichever is still open (not set to -1) is closed afterwards."""
    fds = list(os.pipe())
    yield fds
    for fd in (fd for fd in fds if fd >= 0):
        try:
            close_now(fd)
        except OSError:
            pass


def read_text(path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_timestamp_is_utc_with_milliseconds():
    assert output.timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert output.timestamp(T0) == "2026-12-03T07:50:01.123Z"
    assert output.timestamp(T0 + 0.8769) == "2026-12-03T07:50:02.000Z"    # truncated, never 1000 ms


def test_log_path_follows_the_state_file_name(tmp_path):
    data = str(tmp_path)
    assert output.log_path(data) == os.path.join(data, "logs", "supervisor.log")
    assert output.log_path(data, "10.0.0.2") == os.path.join(data, "logs", "supervisor-10.0.0.2.log")
    odd = "fe80::1%eth0 x"
    state_name = os.path.basename(runstate.state_path(data, odd))
    assert os.path.basename(output.log_path(data, odd)) == state_name[:-5] + ".log"
    assert "/" not in os.path.basename(output.log_path(data, "../../etc"))


def test_every_line_goes_stamped_to_the_file_and_plain_to_the_console(tmp_path, pipe):
    path = str(tmp_path / "logs" / "supervisor.log")          # logs/ does not exist yet
    with SupervisorOutput(path, console_fd=pipe[1], clock=lambda: T0) as out:
        out("redis started (pid 42)")
        out("stopping")
    assert os.read(pipe[0], 4096) == b"redis started (pid 42)\nstopping\n"
    assert read_text(path) == ("2026-12-03T07:50:01.123Z redis started (pid 42)\n"
                               "2026-12-03T07:50:01.123Z stopping\n")


def test_each_line_of_a_multiline_message_is_stamped(tmp_path):
    path = str(tmp_path / "s.log")
    with SupervisorOutput(path, console_fd=None, clock=lambda: T0) as out:
        out("one\ntwo")
        out("")
    lines = read_text(path).splitlines()
    assert lines == ["2026-12-03T07:50:01.123Z one", "2026-12-03T07:50:01.123Z two", "2026-12-03T07:50:01.123Z "]


def test_a_closed_stdout_is_dropped_for_good_and_the_file_goes_on(tmp_path, pipe):
    path = str(tmp_path / "s.log")
    with SupervisorOutput(path, console_fd=pipe[1]) as out:
        out("cluster ready")
        assert os.read(pipe[0], 4096) == b"cluster ready\n"
        close_now(pipe[0])                      # tee died: the reader is gone
        pipe[0] = -1
        out("stopping")                         # EPIPE here: not raised
        assert out.console_fd is None
        # the same fd number working again is not tried again: the console is given up
        fresh_r, fresh_w = os.pipe()
        os.dup2(fresh_w, pipe[1])
        close_now(fresh_w)
        out("gate1 stopped (code 0)")
        out("cluster stopped")
        close_now(pipe[1])
        pipe[1] = -1
        assert os.read(fresh_r, 4096) == b""
        close_now(fresh_r)
    text = read_text(path)
    assert [line[25:] for line in text.splitlines()] == [
        "cluster ready", "stopping", "gate1 stopped (code 0)", "cluster stopped"]
    assert all(STAMPED.match(line) for line in text.splitlines())


def test_a_console_that_is_the_log_file_itself_gets_each_line_once(tmp_path):
    path = str(tmp_path / "supervisor.log")
    with open(path, "ab") as redirected:        # zonechat up >> data/logs/supervisor.log
        with SupervisorOutput(path, console_fd=redirected.fileno()) as out:
            out("cluster ready")
    lines = read_text(path).splitlines()
    assert len(lines) == 1 and STAMPED.match(lines[0]) and lines[0].endswith(" cluster ready")


def test_the_file_is_appended_to_across_runs(tmp_path):
    path = str(tmp_path / "supervisor.log")
    for word in ("first", "second"):
        with SupervisorOutput(path, console_fd=None) as out:
            out(f"{word} run")
    assert [line[25:] for line in read_text(path).splitlines()] == ["first run", "second run"]


def test_a_log_past_log_keep_bytes_is_rotated_at_start(tmp_path):
    path = str(tmp_path / "supervisor.log")
    with open(path, "wb") as fh:
        fh.truncate(LOG_KEEP_BYTES + 1)         # sparse: big on paper, nothing on disk
    with SupervisorOutput(path, console_fd=None) as out:
        out("after rotation")
    assert os.path.getsize(path + ".1") == LOG_KEEP_BYTES + 1
    assert read_text(path).splitlines()[0].endswith(" after rotation")


def test_a_failing_log_file_never_stops_the_console(pipe):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with SupervisorOutput("/dev/full", console_fd=pipe[1]) as out:     # every write: ENOSPC
        out("stopping")
    assert os.read(pipe[0], 4096) == b"stopping\n"


def test_a_line_after_close_is_not_an_error(tmp_path):
    out = SupervisorOutput(str(tmp_path / "s.log"), console_fd=None)
    out.close()
    out("late line")


def test_sigpipe_cannot_kill_the_supervisor(tmp_path):
    """SIGPIPE back to its default (as a parent may leave it): a write to a closed pipe
    would kill the process without ignore_sigpipe()."""
    script = (
        "import os, signal, sys\n"
        "from cluster import output\n"
        "signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
        "if sys.argv[1] == 'ignore':\n"
        "    output.ignore_sigpipe()\n"
        "r, w = os.pipe()\n"
        "os.close(r)\n"
        "with output.SupervisorOutput(sys.argv[2], console_fd=w) as out:\n"
        "    out('stopping')\n"
        "    out('cluster stopped')\n")
    runs = {}
    for mode in ("ignore", "default"):
        path = str(tmp_path / f"{mode}.log")
        proc = subprocess.run([sys.executable, "-c", script, mode, path], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=60)
        runs[mode] = proc.returncode
        if mode == "ignore":
            assert proc.returncode == 0, proc.stderr
            assert [line[25:] for line in read_text(path).splitlines()] == ["stopping", "cluster stopped"]
    assert runs["default"] == -signal.SIGPIPE       # the test can tell: without it, SIGPIPE kills
