"""The supervisor's state file: who runs where, for ``zonechat status`` and ``down``.

``<data_dir>/run/supervisor.json`` (``supervisor-<host>.json`` with ``up --host H``),
rewritten atomically (write a temp file, rename) on every change::

    {"pid": 4242, "create_time": 1732630000.12, "started_at": 1732630000.3,
     "config": "/abs/config.yaml", "host": null,
     "state": "starting" | "ready" | "stopping" | "failed",
     "nodes": {"redis": {"role": "redis", "pid": 4243, "create_time": ..., "state": "running",
                         "started_at": 1732630000.4, "restarts": 0,
                         "log": "/abs/data/logs/redis.log"}, ...}}

Node states: starting, running, backoff (exited, restart pending), flapping (restart in
``retry_in``), stopping, stopped. ``nodes`` is in start order. ``create_time`` is the
process start time the kernel reports (psutil): a pid only counts as ours while it still
matches, so a recycled pid is never signalled. The file is removed when the supervisor
stops; a file whose supervisor is gone is stale. ``<name>.lock`` (flock) is held by the
running supervisor, so a second ``up`` on the same data_dir is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re

import psutil


class AlreadyRunning(Exception):
    """Another supervisor holds this data_dir."""


def state_path(data_dir: str, host: str | None = None) -> str:
    name = "supervisor" if host is None else "supervisor-" + re.sub(r"[^A-Za-z0-9_.-]", "_", host)
    return os.path.join(data_dir, "run", name + ".json")


def write(path: str, doc: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)


def read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def exclusive(path: str):
    """Hold ``<path>.lock`` for the block; AlreadyRunning if another process holds it."""
    with open(path + ".lock", "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            doc = read(path) or {}
            raise AlreadyRunning(f"a supervisor (pid {doc.get('pid', '?')}) already runs on "
                                 f"{os.path.dirname(os.path.dirname(path))}; run zonechat down first") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(pid: int | None, ctime: float | None = None) -> bool:
    """True while ``pid`` runs (not a zombie) and, if given, started at ``ctime``."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if ctime is not None and abs(proc.create_time() - ctime) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes(doc: dict) -> list[tuple[str, int, float | None]]:
    """(name, pid, create_time) of the supervisor (name ``supervisor``) and every node."""
    procs = [("supervisor", doc.get("pid"), doc.get("create_time"))]
    for name, node in (doc.get("nodes") or {}).items():
        procs.append((name, node.get("pid"), node.get("create_time")))
    return [p for p in procs if p[1]]
