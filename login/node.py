"""The login role: register, authenticate, one session per user, welcome + offline replay.

A login runs in its own greenlet (bounded pool; when full the gate hears ``unavailable``):
count the attempt against the failed-login limit, verify the password (argon2id, on the
bounded hash pool of ``login/hashing.py``) or the token, ``bind`` the session at center and
wait for ``bound`` (center kicks the replaced session), then read the welcome state and
the offline replay from the store and send both to the gate in one ``welcome`` envelope.
Binding before reading means every message is either in the replay or delivered live (the
gate drops the seqs it already pushed).

What a client can make this role spend is bounded before the expensive part:

- register checks the name (rule, reserved, taken: one EXISTS) before hashing anything;
  only a free name costs a hash.
- every login attempt is counted (INCR + EXPIRE, one transaction) *before* its check, so
  parallel attempts for one user cannot all pass the limit: at most ``login.failed_logins``
  verifications per user and ``failed_window``. An attempt that succeeds, or that was not
  checked (the hash pool was busy), is taken back, so only failures use up the limit.
- a login of a user that does not exist (or has no password: token-only accounts)
  verifies against a dummy hash made at startup with the same parameters: it costs what a
  wrong password costs.
- a wrong password or token is answered ``auth_failed`` and not logged (one line when a
  user reaches the limit); a password is never logged.
"""
from __future__ import annotations

import collections
import itertools
import secrets as _random
import time

import gevent
from argon2 import PasswordHasher, Type
from gevent.event import AsyncResult
from gevent.pool import Pool

from cluster import convs, tokens
from cluster.codec import packb, unpackb
from cluster.envelopes import Bind, Bound, Login, Register, Resume, Resumed, Welcome
from cluster.metrics import redis_answers
from cluster.node import Node
from cluster.replies import OK, Refused, unavailable
from cluster.stats import bus_counters, report_loop
from dc import retention
from dc.store import Store, StoreUnavailable
from login.hashing import HashBusy, HashPool

BIND_TIMEOUT = 3.0
MAX_LOGINS = 200
MIN_PASSWORD = 8
RESERVED = {"system"}
GATE_LOGIN_WAIT = 10.0     # the gate waits max(gate.request_timeout, this) for login (gate/node.py)
AFTER_HASH = BIND_TIMEOUT + 1.0   # what a login still needs after its hash: bind, welcome read
BUSY_RETRY_MS = 500
WRONG = "wrong user name or password"


class LoginNode(Node):
    role = "login"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        conf = config.login
        self.conf = conf
        hasher = PasswordHasher(time_cost=conf.argon2_time_cost, memory_cost=conf.argon2_memory_kib,
                                parallelism=conf.argon2_parallelism, type=Type.ID)
        self.hashes = HashPool(hasher, conf.hash_threads, conf.hash_queue)
        self.dummy_hash = hasher.hash(_random.token_hex(16))   # what an unknown user is checked against
        self.token_key = tokens.key_of(config)
        gate_wait = max(config.gate.request_timeout, GATE_LOGIN_WAIT)
        self.hash_wait = max(0.5, gate_wait - AFTER_HASH)     # the longest a request queues for a hash
        self.store = Store.from_config(config, max_connections=64)
        self.retention = retention.all_bounds(config.chat)      # the replay starts at what is kept
        self.pool = Pool(MAX_LOGINS)
        self.binds: dict = {}
        self._bind_ids = itertools.count(1)
        self.center = config.nodes_of("center")[0].name
        self.stats = collections.Counter()
        self.results = collections.Counter()    # (login | register | resume, ok | error code)
        self.redis_errors = 0

    def setup(self) -> str:
        addr = self.bus.bind()
        self.bus.on(Register, lambda env: self.run(self.register, env))
        self.bus.on(Login, lambda env: self.run(self.login, env))
        self.bus.on(Bound, self.on_bound)
        self.bus.on(Resume, lambda env: self.run(self.resume, env))
        self.spawn(report_loop, self, self.ops_counters, name="stats_reporter")
        return addr

    def shutdown(self) -> None:
        self.pool.kill(timeout=2)
        self.hashes.close()
        self.store.close()

    def ops_counters(self) -> dict:
        """This login node's report to center's operator view (``cluster/stats.py``):
        answers by kind, the hash pool's work and refusals, and what is in flight."""
        return {**self.stats, **self.hashes.counters(), "in_flight": len(self.pool),
                **bus_counters(self.bus)}

    def metrics(self, fam) -> None:
        for kind in ("login", "register"):
            by = {result: n for (k, result), n in self.results.items() if k == kind}
            fam.counter(kind + "s", f"{kind} requests answered, by result (ok or the error code)",
                        by, label="result")
        hashes = self.hashes.counters()
        fam.counter("hashes", "password hashes computed", hashes["hashes"])
        fam.gauge("hash_waiting", "logins and registers waiting for a hash thread", hashes["hash_waiting"])
        fam.counter("hash_refused", "requests refused: the hash queue was full", hashes["hash_full"])
        fam.counter("hash_late", "requests dropped: their hash would come too late", hashes["hash_late"])
        fam.gauge("in_flight", "requests being handled", len(self.pool))
        fam.counter("redis_errors", "requests answered unavailable: Redis failed", self.redis_errors)
        super().metrics(fam)

    def ready_checks(self) -> dict:
        return {"redis": redis_answers(self.store), "center": self.bus.linked(self.center_name())}

    def watched_peers(self) -> list[str]:
        return [self.center_name()]

    def center_name(self) -> str:
        return self.config.nodes_of("center")[0].name

    def run(self, fn, env) -> None:
        """``fn(env, deadline)`` in the bounded pool; a request it cannot take answers
        unavailable. ``deadline`` (time.monotonic()) bounds the request's wait for a hash."""
        if self.pool.full():
            self.answer(env.gate, env.req, unavailable("login is busy; retry", retry_ms=BUSY_RETRY_MS))
            return
        self.pool.spawn(self._guarded, fn, env, time.monotonic() + self.hash_wait)

    def _guarded(self, fn, env, deadline: float) -> None:
        try:
            fn(env, deadline)
        except Refused as exc:
            self.stats[exc.code] += 1
            self.results[(env.KIND, exc.code)] += 1
            self.answer(env.gate, env.req, exc.body())
        except HashBusy as exc:
            self.stats["unavailable"] += 1
            self.results[(env.KIND, "unavailable")] += 1
            self.answer(env.gate, env.req, unavailable(f"login is busy ({exc}); retry",
                                                       retry_ms=BUSY_RETRY_MS))
        except StoreUnavailable as exc:
            self.log.warning("store unavailable: %s", exc)
            self.redis_errors += 1
            self.stats["unavailable"] += 1
            self.results[(env.KIND, "unavailable")] += 1
            self.answer(env.gate, env.req, unavailable("storage is unavailable; retry"))

    # -- register -----------------------------------------------------------------------
    def register(self, env: Register, deadline: float) -> None:
        """Every check that costs no hash first: name, password length, name taken."""
        user, password = env.user, env.password
        self.stats["registers"] += 1
        if not convs.valid_user(user) or user in RESERVED:
            raise Refused("bad_name", "user names are 1-32 of A-Z a-z 0-9 _ . - (and not 'system')")
        if len(password) < MIN_PASSWORD:
            raise Refused("weak_password", f"passwords need at least {MIN_PASSWORD} characters")
        if self.store.existing_users([user]):
            raise Refused("user_exists", f"the name {user} is taken")
        pwhash = self.hashes.hash(password, deadline)
        if not self.store.create_user(user, pwhash):     # registered meanwhile
            raise Refused("user_exists", f"the name {user} is taken")
        self.stats["registered"] += 1
        self.results[("register", "ok")] += 1
        self.answer(env.gate, env.req, OK)

    # -- login --------------------------------------------------------------------------
    def login(self, env: Login, deadline: float) -> None:
        user = env.user
        self.stats["logins"] += 1
        record, blocked = self.authenticate(user, env.password, env.token, deadline)
        if record.get("ban"):
            raise Refused("auth_failed", f"this account is banned: {record['ban']}")
        status = [record.get("st", ""), record.get("hid") == "1"]
        self.bind(user, env.gate, env.sid, status)
        token, expires = tokens.mint(self.token_key, user, tokens.epoch_of(record), self.conf.token_ttl)
        last, replay, read = self.store.welcome_state(user, self.config.chat.replay_max, bounds=self.retention)
        body = {"t": "welcome", "user": user, "token": token, "expires": expires,
                "convs": last, "ts": int(time.time() * 1000),
                "unread": {c: max(0, last[c] - seq) for c, seq in read.items()}, "read": read,
                "status": {"text": status[0], "hidden": status[1]}}
        self.stats["welcome"] += 1
        self.results[("login", "ok")] += 1
        self.bus.send(env.gate, Welcome(env.req, user, packb(body), replay, sorted(blocked)))

    def resume(self, env: Resume, _deadline: float) -> None:
        """After a center restart: what a session may have missed, above what it has."""
        _last, replay, _read = self.store.welcome_state(env.user, self.config.chat.replay_max, floors=env.seen,
                                                bounds=self.retention)
        # the session's own sends were acked, never pushed: pushing them now would echo them
        replay = [item for item in replay if unpackb(item[2]).get("from") != env.user]
        self.bus.send(env.gate, Resumed(env.req, replay))

    def authenticate(self, user, password, token, deadline: float) -> tuple[dict, set]:
        """(the user record, the users it blocked), or Refused. The attempt is counted
        before it is checked; a success or an unchecked attempt is taken back."""
        conf = self.conf
        if not convs.valid_user(user):
            raise Refused("auth_failed", WRONG)
        attempts = self.store.count_failed_login(user, conf.failed_window)
        if attempts > conf.failed_logins:
            if attempts == conf.failed_logins + 1:
                self.log.info("user %s reached the failed-login limit (%d in %d s)", user,
                              conf.failed_logins, conf.failed_window)
            raise Refused("rate_limited", "too many failed logins for this user; wait a minute")
        try:
            _failed, record, blocked = self.store.login_record(user)
            reason = self.check_secret(record, user, password, token, deadline)
        except (HashBusy, StoreUnavailable):
            self.store.forget_failed_login(user)        # not checked: no attempt
            raise
        if reason is not None:
            raise Refused("auth_failed", reason)
        self.store.forget_failed_login(user)
        return record, blocked

    def check_secret(self, record, user, password, token, deadline: float) -> str | None:
        """None when the token or password is good for ``user``, else the reason."""
        if token is not None:
            if record is None:
                return WRONG
            why = tokens.verify(self.token_key, token, user, tokens.epoch_of(record))
            return None if why is None else f"token refused: {why}"
        stored = record.get("pw", "") if record is not None else ""
        real = stored.startswith("$argon2")
        matched = self.hashes.verify(stored if real else self.dummy_hash, password, deadline)
        return None if matched and real else WRONG

    def bind(self, user, gate, sid, status) -> None:
        bind_id = next(self._bind_ids)
        result = self.binds[bind_id] = AsyncResult()
        self.bus.send(self.center, Bind(user, gate, sid, self.name, bind_id, status))
        try:
            result.get(timeout=BIND_TIMEOUT)
        except gevent.Timeout:
            raise Refused("unavailable", "the cluster could not bind the session; retry") from None
        finally:
            self.binds.pop(bind_id, None)

    def on_bound(self, env: Bound) -> None:
        result = self.binds.get(env.bind_id)
        if result is not None:
            result.set(True)
