"""The login role: register, authenticate, one session per user, welcome + offline replay.

A login runs in its own greenlet (bounded pool; when full the gate hears ``unavailable``):
check the failed-login limit, verify the password (argon2id, in the thread pool so the
loop keeps serving) or the token, ``bind`` the session at center and wait for ``bound``
(center kicks the replaced session), then read the welcome state and the offline replay
from the store and send both to the gate in one ``welcome`` envelope. Binding before
reading means every message is either in the replay or delivered live (the gate drops
the seqs it already pushed).
"""
from __future__ import annotations

import itertools
import time

import gevent
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from gevent.event import AsyncResult
from gevent.pool import Pool

from cluster import convs, tokens
from cluster.codec import packb, unpackb
from cluster.envelopes import Bind, Bound, Login, Register, Resume, Resumed, Welcome
from cluster.node import Node
from cluster.replies import OK, Refused, unavailable
from dc.store import Store, StoreUnavailable

BIND_TIMEOUT = 3.0
MAX_LOGINS = 200
MIN_PASSWORD = 8
RESERVED = {"system"}


class LoginNode(Node):
    role = "login"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        conf = config.login
        self.conf = conf
        self.hasher = PasswordHasher(time_cost=conf.argon2_time_cost, memory_cost=conf.argon2_memory_kib,
                                     parallelism=conf.argon2_parallelism, type=Type.ID)
        self.store = Store.from_config(config, max_connections=64)
        self.pool = Pool(MAX_LOGINS)
        self.binds: dict = {}
        self._bind_ids = itertools.count(1)
        self.center = config.nodes_of("center")[0].name

    def setup(self) -> str:
        addr = self.bus.bind()
        self.bus.on(Register, lambda env: self.run(self.register, env))
        self.bus.on(Login, lambda env: self.run(self.login, env))
        self.bus.on(Bound, self.on_bound)
        self.bus.on(Resume, lambda env: self.run(self.resume, env))
        return addr

    def shutdown(self) -> None:
        self.pool.kill(timeout=2)
        self.store.close()

    def run(self, fn, env) -> None:
        """``fn(env)`` in the bounded pool; a request it cannot take answers unavailable."""
        if self.pool.full():
            self.answer(env.gate, env.req, unavailable("login is busy; retry", retry_ms=500))
            return
        self.pool.spawn(self._guarded, fn, env)

    def _guarded(self, fn, env) -> None:
        try:
            fn(env)
        except Refused as exc:
            self.answer(env.gate, env.req, exc.body())
        except StoreUnavailable as exc:
            self.log.warning("store unavailable: %s", exc)
            self.answer(env.gate, env.req, unavailable("storage is unavailable; retry"))

    # -- register -----------------------------------------------------------------------
    def register(self, env: Register) -> None:
        user, password = env.user, env.password
        if not convs.valid_user(user) or user in RESERVED:
            raise Refused("bad_name", "user names are 1-32 of A-Z a-z 0-9 _ . - (and not 'system')")
        if len(password) < MIN_PASSWORD:
            raise Refused("weak_password", f"passwords need at least {MIN_PASSWORD} characters")
        pwhash = gevent.get_hub().threadpool.apply(self.hasher.hash, (password,))
        if not self.store.create_user(user, pwhash):
            raise Refused("user_exists", f"the name {user} is taken")
        self.answer(env.gate, env.req, OK)

    # -- login --------------------------------------------------------------------------
    def login(self, env: Login) -> None:
        user = env.user
        record, blocked = self.authenticate(user, env.password, env.token)
        if record.get("ban"):
            raise Refused("auth_failed", f"this account is banned: {record['ban']}")
        self.bind(user, env.gate, env.sid)
        token, expires = tokens.mint(self.config.cluster.secret, user, self.conf.token_ttl)
        last, replay = self.store.welcome_state(user, self.config.chat.replay_max)
        body = {"t": "welcome", "user": user, "token": token, "expires": expires,
                "convs": last, "ts": int(time.time() * 1000)}
        self.bus.send(env.gate, Welcome(env.req, user, packb(body), replay, sorted(blocked)))

    def resume(self, env: Resume) -> None:
        """After a center restart: what a session may have missed, above what it has."""
        _last, replay = self.store.welcome_state(env.user, self.config.chat.replay_max, floors=env.seen)
        # the session's own sends were acked, never pushed: pushing them now would echo them
        replay = [item for item in replay if unpackb(item[2]).get("from") != env.user]
        self.bus.send(env.gate, Resumed(env.req, replay))

    def authenticate(self, user, password, token) -> tuple[dict, set]:
        """(the user record, the users it blocked), or Refused."""
        conf = self.conf
        if not convs.valid_user(user):
            raise Refused("auth_failed", "wrong user name or password")
        failed, record, blocked = self.store.login_record(user)
        if failed >= conf.failed_logins:
            raise Refused("rate_limited", "too many failed logins for this user; wait a minute")
        reason = self.check_secret(record, user, password, token)
        if reason is not None:
            self.store.count_failed_login(user, conf.failed_window)
            raise Refused("auth_failed", reason)
        return record, blocked

    def check_secret(self, record, user, password, token) -> str | None:
        if record is None:
            return "wrong user name or password"
        if token is not None:
            why = tokens.verify(self.config.cluster.secret, token, user)
            return None if why is None else f"token refused: {why}"
        try:
            gevent.get_hub().threadpool.apply(self.hasher.verify, (record["pw"], password))
        except (VerificationError, InvalidHashError):
            return "wrong user name or password"
        return None

    def bind(self, user, gate, sid) -> None:
        bind_id = next(self._bind_ids)
        result = self.binds[bind_id] = AsyncResult()
        self.bus.send(self.center, Bind(user, gate, sid, self.name, bind_id))
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
