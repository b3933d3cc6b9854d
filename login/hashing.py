"""Password hashing on a bounded pool of its own: argon2id off the event loop, with a limit.

argon2 is the one expensive thing a client can make login do (``login.argon2_memory_kib``
of memory and tens of milliseconds of a core per hash), so it runs here, bounded:

- **threads**: ``login.hash_threads`` threads (a gevent ``ThreadPool`` of its own, not the
  hub's shared one) hash or verify one password each: at most that many argon2
  computations, and that many times ``argon2_memory_kib`` of memory, at once.
- **queue**: at most ``login.hash_queue`` requests wait for a thread. One more is refused at
  once (``HashBusy``) and never queued.
- **deadline**: every request carries the time by which its hash must have started (the
  login node sets it from the gate's login timeout). A request still waiting then is
  dropped unhashed (``HashBusy``): the gate has given up on it or is about to, and hashing
  it anyway would only delay the requests behind it.

``HashBusy`` is answered ``unavailable`` with ``retry_ms``; nothing was stored or checked.
Verification never raises for a wrong password: a mismatch, or a stored value that is no
argon2 hash, is ``False`` (so a wrong password costs no traceback in the log).
"""
from __future__ import annotations

import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool


class HashBusy(Exception):
    """The pool could not take the request (queue full, or its deadline passed)."""


class HashPool:
    def __init__(self, hasher: PasswordHasher, threads: int, queue: int):
        self.hasher = hasher
        self.threads = ThreadPool(threads)
        self.slots = Semaphore(threads)
        self.queue_max = queue
        self.waiting = 0
        self.done = 0           # hashes and verifications computed
        self.full = 0           # refused: the queue was full
        self.late = 0           # dropped unhashed: the deadline passed while queued

    def hash(self, password: str, deadline: float) -> str:
        """The argon2id hash of ``password``, or HashBusy."""
        return self._run(self.hasher.hash, (password,), deadline)

    def verify(self, pwhash: str, password: str, deadline: float) -> bool:
        """Whether ``password`` matches ``pwhash``, or HashBusy."""
        return self._run(_matches, (self.hasher, pwhash, password), deadline)

    def _run(self, fn, args, deadline: float):
        """``fn(*args)`` on a pool thread once one is free; ``deadline`` is time.monotonic()."""
        if time.monotonic() >= deadline:
            self.late += 1
            raise HashBusy("the request waited too long before its password hash")
        if not self.slots.acquire(blocking=False):
            if self.waiting >= self.queue_max:
                self.full += 1
                raise HashBusy("the password hash queue is full")
            self.waiting += 1
            try:
                got = self.slots.acquire(timeout=max(0.0, deadline - time.monotonic()))
            finally:
                self.waiting -= 1
            if not got:
                self.late += 1
                raise HashBusy("the password hash queue did not move in time")
        try:
            self.done += 1
            return self.threads.apply(fn, args)
        finally:
            self.slots.release()

    def counters(self) -> dict:
        return {"hashes": self.done, "hash_waiting": self.waiting, "hash_full": self.full,
                "hash_late": self.late}

    def close(self) -> None:
        self.threads.kill()


def _matches(hasher: PasswordHasher, pwhash: str, password: str) -> bool:
    """Runs on a pool thread: never raises for a wrong password or a non-argon2 value."""
    try:
        return hasher.verify(pwhash, password)
    except (VerificationError, InvalidHashError):
        return False
