"""One supervised child process: spawn it, spot its ready line, signal and stop it.

Every child runs in its own process group (a terminal's Ctrl-C reaches only the
supervisor, which then stops the children in order) with PR_SET_PDEATHSIG = SIGKILL,
so no child outlives a supervisor that was itself SIGKILLed. Its stdout goes through
the supervisor (to spot the ready line) into ``<data_dir>/logs/<node>.log``; its stderr is
appended to the same file directly.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time

import gevent
from gevent import subprocess
from gevent.event import Event

from cluster import redis_server, runstate

LOG_KEEP_BYTES = 16 * 1024 * 1024   # a node log past this is moved to <node>.log.1 at start
# The directory holding the packages (cluster, gate, ..., client, tools): the source
# checkout, or site-packages (or a --target directory) of an installed copy.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _site_dirs() -> set[str]:
    """The site directories every interpreter of this installation puts on sys.path itself."""
    import site
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    return {os.path.realpath(d) for d in dirs}


def child_env() -> dict:
    """The environment of every child: ours, plus the project importable and unbuffered.

    PROJECT_ROOT goes first on PYTHONPATH (a checkout wins over an older install), unless
    it is a site directory the child's interpreter loads anyway (an installed copy): a
    site-packages on PYTHONPATH would come before the standard library."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.path.realpath(PROJECT_ROOT) not in _site_dirs():
        paths.insert(0, PROJECT_ROOT)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def die_with_parent(parent_pid: int):
    """A preexec_fn: SIGKILL this child when the process that forked it dies."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)   # loaded before fork, used after it

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:          # the parent died before prctl took hold
            os._exit(1)
    return preexec


def open_log(path: str):
    """Append to ``path``, first moving a log past LOG_KEEP_BYTES to ``path.1``."""
    try:
        if os.path.getsize(path) > LOG_KEEP_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    return open(path, "ab", buffering=0)


class Child:
    """One supervised process: its current Popen, state and restart history."""

    def __init__(self, spec, log_dir: str, policy):
        self.spec = spec
        self.log_path = os.path.join(log_dir, f"{spec.name}.log")
        self.policy = policy
        self.popen = None
        self.state = "stopped"
        self.started_at = None
        self.create_time = None
        self.restarts = 0
        self.ready = Event()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self) -> None:
        self.ready.clear()
        log = open_log(self.log_path)
        try:
            self.popen = subprocess.Popen(
                list(self.spec.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, cwd=PROJECT_ROOT, env=dict(child_env(), ZONECHAT_RESTARTS=str(self.restarts)),
                process_group=0,
                preexec_fn=die_with_parent(os.getpid()))
        except BaseException:
            log.close()
            raise
        self.started_at = time.time()
        self.create_time = runstate.create_time(self.popen.pid)
        self.state = "starting"
        gevent.spawn(self._stdout_listener, self.popen, log)
        if self.spec.probe:
            gevent.spawn(self._ready_prober, self.popen)

    def _stdout_listener(self, popen, log) -> None:
        """Copy the child's stdout lines to its log; set ``ready`` on the ready line.

        Ends with the child (EOF). It keeps draining even when the log cannot be
        written (disk full): a child blocked on a full stdout pipe would hang."""
        prefix = self.spec.ready_prefix
        try:
            for line in popen.stdout:
                with contextlib.suppress(OSError):
                    log.write(line)
                if prefix and line.decode("utf-8", "replace").startswith(prefix) and popen is self.popen:
                    self.ready.set()
        finally:
            popen.stdout.close()
            log.close()

    def _ready_prober(self, popen) -> None:
        """Set ``ready`` once the managed Redis answers AUTH + PING; ends if the child exits
        (the supervisor stops a child that is not ready within ready_timeout)."""
        host, port, password = self.spec.probe
        if redis_server.wait_ready(host, port, password, math.inf, alive=lambda: popen.poll() is None) \
                and popen is self.popen:
            self.ready.set()

    def wait_ready(self, timeout: float, stopping: Event) -> bool:
        """True once ready; False on exit, timeout or a stop request."""
        gevent.wait([self.ready, self.popen.result, stopping], timeout=timeout, count=1)
        return self.ready.is_set() and self.alive()

    def signal(self, sig: int) -> None:
        try:
            if sig == signal.SIGKILL:
                os.killpg(self.popen.pid, sig)   # its whole group: helpers it started too
            else:
                self.popen.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, graceful_timeout: float) -> int | None:
        """SIGTERM, then SIGKILL after ``graceful_timeout``; the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            self.state = "stopping"
            self.signal(signal.SIGTERM)
            if not self.popen.result.wait(timeout=graceful_timeout) and self.alive():
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self.state = "stopped"
        return self.popen.returncode

    def last_log_line(self, limit: int = 4096) -> str:
        """The last non-empty line of the child's log (usually the error that ended it)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self.log_path) - limit))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")

    def entry(self) -> dict:
        return {"role": self.spec.role, "pid": self.pid, "create_time": self.create_time,
                "state": self.state, "started_at": self.started_at,
                "restarts": self.restarts, "log": self.log_path}
