"""Where the supervisor's own lines go: a timestamped log file always, stdout best-effort.

``zonechat up`` hands a ``SupervisorOutput`` to the supervisor as its ``out``. Every line
is appended to ``<data_dir>/logs/supervisor.log`` (``supervisor-<host>.log`` with ``up
--host H``: the name of the state file, cluster/runstate.py) as
``2026-12-03T07:50:01.123Z <line>`` (UTC, milliseconds), then the plain line is written
to the console (stdout). The console is the fragile half: under ``make up | tee log`` a
terminal's Ctrl-C kills tee too, and the supervisor's first ``stopping`` line would hit a
closed pipe. So:

- the file is written first, with each line in one ``write`` on an unbuffered append-mode
  file; a failing write (disk full) is dropped, never raised: the supervisor's stop must
  not depend on its log;
- the console is written with ``os.write`` on its file descriptor, not through
  ``sys.stdout``: nothing is left in a Python buffer that the interpreter would fail to
  flush at exit (that turns exit code 0 into 120). The first OSError (EPIPE, EIO of a
  vanished terminal, ...) ends console output for good; the file goes on;
- SIGPIPE is ignored (``ignore_sigpipe``; Python does at start-up already, this makes
  sure of it), so a closed pipe is an EPIPE error and never a signal that kills;
- when the console is the log file itself (``zonechat up >> data/logs/supervisor.log``,
  as the test harness does) the plain copy is skipped: no line twice in one file.

The file is rotated like a node log (cluster/child.py ``open_log``): past LOG_KEEP_BYTES
at open, it becomes ``supervisor.log.1``.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from cluster import runstate
from cluster.child import open_log


def log_path(data_dir: str, host: str | None = None) -> str:
    """``<data_dir>/logs/supervisor.log``, or ``supervisor-<host>.log`` (sanitised as the state file)."""
    name = os.path.basename(runstate.state_path(data_dir, host))[:-len(".json")]
    return os.path.join(data_dir, "logs", name + ".log")


def timestamp(now: float) -> str:
    """``now`` (seconds since the epoch) as ``2026-12-03T07:50:01.123Z``."""
    millis = int(now * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"


def ignore_sigpipe() -> None:
    """A write to a closed pipe raises EPIPE instead of killing the process."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def stdout_fd() -> int | None:
    """The descriptor behind ``sys.stdout`` (flushed first, so earlier lines stay in order);
    None when it has none (a test runner's capture, stdout closed)."""
    try:
        sys.stdout.flush()
        return sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return None


def _same_file(fd: int, other_fd: int) -> bool:
    try:
        a, b = os.fstat(fd), os.fstat(other_fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class SupervisorOutput:
    """``out(line)``: a timestamped line in the log file, the plain line on ``console_fd``.

    ``console_fd`` None means file only. ``clock`` gives the time of a line (tests pin it).
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str, console_fd: int | None = 1, clock=time.time):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.clock = clock
        self.file = open_log(path)
        if console_fd is not None and _same_file(console_fd, self.file.fileno()):
            console_fd = None
        self.console_fd = console_fd

    def __call__(self, line: str) -> None:
        stamp = timestamp(self.clock())
        text = "".join(f"{stamp} {part}\n" for part in str(line).splitlines() or [""])
        try:
            self.file.write(text.encode("utf-8", "replace"))
        except (OSError, ValueError):       # disk full, or written after close()
            pass
        self._to_console(f"{line}\n".encode("utf-8", "replace"))

    def _to_console(self, data: bytes) -> None:
        if self.console_fd is None:
            return
        try:
            _write_all(self.console_fd, data)
        except OSError:                     # EPIPE (reader gone), EIO, EBADF: file only from now
            self.console_fd = None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "SupervisorOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
