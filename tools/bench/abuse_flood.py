"""Abuse flood: each abuse case gets its error, and other users' p99 stays under 50 ms.

python -m tools.bench.abuse_flood [--pairs 50] [--rate 200] [--seconds 5] [--login-rate 4]
                                  [--cases register failed_login ...] [--repeat 1]
                                  [--gates 1] [--zones 1]

On one pinned cluster (tools/bench/common.py, default gate limits), ``--pairs`` DM pairs
send at ``--rate`` msgs/s in total and time send→ack (as in tools/bench/group_flood.py),
first in a quiet phase, then in one phase per abuse case, each ``--seconds`` long, while a
legitimate user logs in by password on a fresh connection ``--login-rate`` times a
second (connect → ``welcome``: its p99 is "login p99"; 8 such users take turns, so a slow
login is not replaced by the next). Every abuser's answers are
counted by code. The cases, each aimed at the first gate, from its own addresses (the
per-address limits of one case do not reach the next), and bounded by count too:

- ``register``: 200 connections from 5 addresses, each pipelining 25 ``register`` of fresh
  names: ``ok`` for the first 3 a connection / 20 an address a minute, then
  ``rate_limited``.
- ``failed_login``: 100 connections at once from 4 addresses logging in one after the other
  with wrong passwords, half for one existing user and half for unknown names (4,000
  attempts at most): ``auth_failed``, then ``rate_limited`` (10 per user / per connection,
  50 an address, a minute).
- ``connections``: 1,500 connections from one address, held for the phase, then closed:
  1,000 ``held``, then ``too_many_connections``. (Held past ``gate.login_timeout``, 10 s,
  they are ``kicked`` idle instead.)
- ``room_join``: one session joining 10,000 rooms (``gate.max_inflight`` in flight):
  ``joined`` 100 times, then ``too_many_rooms``.
- ``deep_nesting``: frames nested 5,000 deep, each on a new connection (2,000 at most, 20
  at once): ``bad_frame`` and the connection ``closed``.

The table has a row per run and case: DM p50/p99, login p99 (and its failures), what the
abusers sent and the answers they got by code, and ``expect``: the case's error code(s)
and whether they came. The wait for the last answers is bounded (10 s).
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import argparse
import collections
import itertools
import os
import statistics
import sys
import time

import gevent
from gevent.pool import Pool

from cluster.codec import FrameReader, encode_frame, frame, packb, unpackb
from tools.bench import common
from tools.bench.flood_common import add_cluster_args, add_dm_args, dm_extra, dm_peers
from tools.bench.group_flood import ANSWER_WAIT, Abuser, dm_phase
from tools.bench.runner import _with_cluster
from tools.bench.sources import PER_ADDRESS, connect
from tools.bench.w1_room import pace
from tools.bench.workloads import common_wait

PASSWORD = "bench-password"     # every provisioned user's (common.provision)
READ_WAIT = 12.0                # one answer at most this late (login and register: 10 s)
SETTLE = 1.0                    # between phases: one case's closes do not count in the next
SOURCE_BASE = 200               # address blocks (sources.py) from here on: the DM pairs stay below
PROBE_USERS = 8                 # the legitimate users the login probe takes in turn
PROBE, JOIN, CONNS, NEST, REGISTER, FAILED = 0, 1, 2, 3, 10, 20     # each case's first address


def slot(n: int) -> int:
    """A client number that ``sources.connect`` places on address block SOURCE_BASE + n."""
    return (SOURCE_BASE + n) * PER_ADDRESS


def frames(sock, reader):
    """The decoded frames of ``sock`` until it closes (or fails, or times out)."""
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        for body in reader.feed(data):
            yield unpackb(body)


def code_of(m: dict) -> str:
    if m["t"] == "kicked":
        return f"kicked:{m.get('reason')}"
    return m.get("code", "error") if m["t"] == "error" else m["t"]


def answer_to(it, rid):
    """The reply to ``rid`` (or a refusal or kick, which have none); None at the close."""
    for m in it:
        if m.get("rid") == rid or "rid" not in m and m["t"] in ("error", "kicked"):
            return m
    return None


class LoginProbe:
    """Legitimate users logging in by password on a fresh connection, again and again; in
    turn, so that a slow login is not replaced by the next one (``session_replaced``)."""

    def __init__(self, addr, users: list[str]):
        self.addr, self.users = addr, itertools.cycle(users)
        self.lat: list = []
        self.codes: collections.Counter = collections.Counter()
        self.pending = 0

    def send(self) -> None:         # called by pace
        self.pending += 1
        gevent.spawn(self._once)

    def _once(self) -> None:
        t0, sock = time.perf_counter(), None
        try:
            with gevent.Timeout(READ_WAIT):
                sock = connect(self.addr, slot(PROBE))
                sock.sendall(encode_frame({"t": "login", "rid": 1, "user": next(self.users),
                                           "password": PASSWORD}))
                m = answer_to(frames(sock, FrameReader(1 << 21)), 1)
            if m is not None and m["t"] == "welcome":
                self.lat.append((time.perf_counter() - t0) * 1000)
            else:
                self.codes["closed" if m is None else code_of(m)] += 1
        except gevent.Timeout:
            self.codes["timeout"] += 1
        except OSError:
            self.codes["conn_error"] += 1
        finally:
            self.pending -= 1
            if sock is not None:
                sock.close()

    def probe(self, rate: float, until: float) -> None:
        self.lat, self.codes = [], collections.Counter()
        pace(self, 1 / rate, until)
        common_wait(lambda: not self.pending, READ_WAIT + 1)


class Flood:
    """An abuse case as ``group_flood.dm_phase`` drives it (the shape of its ``Abuser``):
    ``flood(count, until)``, ``sent``, ``answered``, ``codes``, ``first_sent``,
    ``last_answer``. ``expect``: the error code(s) the case must get."""

    name, expect, count = "", (), 0

    def __init__(self, gate):
        self.gate = gate
        self.sent = self.answered = 0
        self.codes: collections.Counter = collections.Counter()
        self.first_sent = self.last_answer = None

    def answer(self, code: str, n: int = 1) -> None:
        self.answered += n
        self.codes[code] += n
        self.last_answer = time.monotonic()

    def close(self) -> None:
        pass


class ConnFlood(Flood):
    """``parallel`` workers, each running ``session(k, until)`` on connection after
    connection while the phase lasts, ``sessions`` in all."""

    sessions, parallel = 0, 1

    def flood(self, count: int, until: float) -> None:
        self.first_sent = time.monotonic()
        ks = itertools.count()

        def worker():
            for k in ks:
                if k >= self.sessions or time.monotonic() >= until:
                    return
                try:
                    self.session(k, until)
                except OSError:
                    self.codes["conn_error"] += 1

        gevent.joinall([gevent.spawn(worker) for _ in range(self.parallel)])

    def session(self, k: int, until: float) -> None:
        raise NotImplementedError


class RegisterFlood(ConnFlood):
    name, expect = "register", ("rate_limited",)
    sessions, parallel, per_conn, addrs = 200, 20, 25, 5
    count = sessions * per_conn

    def session(self, k: int, until: float) -> None:
        salt = os.urandom(3).hex()
        sock = connect(self.gate, slot(REGISTER + k % self.addrs), timeout=READ_WAIT)
        got, sent = 0, False
        try:
            sock.sendall(b"".join(encode_frame({"t": "register", "rid": j + 1, "user": f"n{salt}{k}x{j}",
                                                "password": PASSWORD}) for j in range(self.per_conn)))
            self.sent += self.per_conn
            sent = True
            for m in frames(sock, FrameReader(1 << 21)):
                if "rid" in m:
                    self.answer(code_of(m))
                    got += 1
                    if got == self.per_conn:
                        break
        finally:
            sock.close()
            if sent and got < self.per_conn:
                self.answer("no_answer", self.per_conn - got)


class FailedLoginFlood(ConnFlood):
    name, expect = "failed_login", ("auth_failed", "rate_limited")
    sessions, parallel, tries, addrs = 200, 100, 20, 4
    count = sessions * tries

    def __init__(self, gate, victim: str):
        super().__init__(gate)
        self.victim = victim

    def session(self, k: int, until: float) -> None:
        salt = os.urandom(3).hex()
        sock = connect(self.gate, slot(FAILED + k % self.addrs), timeout=READ_WAIT)
        it = frames(sock, FrameReader(1 << 21))
        try:
            for j in range(self.tries):
                if time.monotonic() >= until:
                    return
                user = self.victim if k % 2 == 0 else f"u{salt}{k}x{j}"      # nobody has these
                sock.sendall(encode_frame({"t": "login", "rid": j + 1, "user": user,
                                           "password": "wrong-password"}))
                self.sent += 1
                m = answer_to(it, j + 1)
                self.answer("closed" if m is None else code_of(m))
                if m is None:
                    return
        finally:
            sock.close()


class NestFlood(ConnFlood):
    name, expect = "deep_nesting", ("bad_frame",)
    sessions, parallel, depth = 2000, 20, 5000
    count = sessions
    # {t: "ping", rid: 1, x: [[[...]]]}: the map and depth - 1 lists (msgpack.packb would refuse)
    DEEP = frame(b"\x83" + b"".join(map(packb, ("t", "ping", "rid", 1, "x"))) + b"\x91" * (depth - 2) + b"\x90")

    def session(self, k: int, until: float) -> None:
        sock = connect(self.gate, slot(NEST), timeout=READ_WAIT)
        try:
            sock.sendall(self.DEEP)
            self.sent += 1
            it = frames(sock, FrameReader(1 << 21))
            m = next(it, None)
            self.answer("closed" if m is None else code_of(m))
            if m is not None and next(it, None) is None:
                self.codes["closed"] += 1          # and then the gate closed it
        finally:
            sock.close()


class ConnectionFlood(Flood):
    """``count`` connections from one address, ``parallel`` connecting at once, each held
    until the phase ends: ``held`` if nothing came, else the frame that did."""

    name, expect = "connections", ("too_many_connections",)
    count, parallel = 1500, 100

    def flood(self, count: int, until: float) -> None:
        self.first_sent = time.monotonic()
        pool, holders = Pool(self.parallel), []
        for _ in range(count):
            if time.monotonic() >= until:
                break
            pool.spawn(self._open, until, holders)
        pool.join()
        gevent.joinall(holders)

    def _open(self, until: float, holders: list) -> None:
        self.sent += 1
        try:
            sock = connect(self.gate, slot(CONNS), timeout=READ_WAIT)
        except OSError:
            self.answer("connect_failed")
            return
        sock.settimeout(None)           # held as long as the phase lasts
        holders.append(gevent.spawn(self._hold, sock, until))

    def _hold(self, sock, until: float) -> None:
        try:
            with gevent.Timeout(max(0.0, until - time.monotonic()), False):
                m = next(frames(sock, FrameReader(1 << 21)), None)
                self.answer("closed" if m is None else code_of(m))
                return
            self.answer("held")
        finally:
            sock.close()


class RoomJoinFlood(Abuser):
    """group_flood's abuser, joining rooms instead: a new one each time."""

    name, expect, count = "room_join", ("too_many_rooms",), 10000

    def create(self) -> bytes:
        k = next(self.groups)
        return encode_frame({"t": "join", "rid": k + 1, "room": f"r:flood{k}"})

    def close(self) -> None:
        self.sock.close()


CASES = ["register", "failed_login", "connections", "room_join", "deep_nesting"]


def phase(peers, probe, case, args) -> dict:
    """One phase: the DMs (and the case's flood, if any) with the login probe alongside."""
    probing = gevent.spawn(probe.probe, args.login_rate, time.monotonic() + args.seconds)
    row = dm_phase(peers, args.rate, args.seconds, [case] if case else (), case.count if case else 0)
    probing.join()
    expect = case.expect if case else ()
    got = all(case.codes[c] for c in expect)
    row.update(case=case.name if case else "quiet", sent=row.pop("creates"),
               login_p99_ms=common.percentile(probe.lat, 99), logins=len(probe.lat),
               login_err=" ".join(f"{k}={v}" for k, v in sorted(probe.codes.items())) or "-",
               expect=("+".join(expect) + (":yes" if got else ":NO")) if case else "-", got_expected=got)
    return row


def run(cl, tokens, args) -> list[dict]:
    cfg, gates, names = cl.cfg, cl.gates(), sorted(tokens)
    dm_names, rest = names[:2 * args.pairs], names[2 * args.pairs:]
    probers, (victim, joiner) = rest[:PROBE_USERS], rest[PROBE_USERS:]
    peers = dm_peers(gates, tokens, dm_names)
    probe = LoginProbe(gates[0], probers)
    make = {"register": lambda: RegisterFlood(gates[0]),
            "failed_login": lambda: FailedLoginFlood(gates[0], victim),
            "connections": lambda: ConnectionFlood(gates[0]),
            "room_join": lambda: RoomJoinFlood(gates[0], joiner, tokens[joiner], slot(JOIN), 0,
                                               cfg.gate.max_inflight),
            "deep_nesting": lambda: NestFlood(gates[0])}
    greenlets = [gevent.spawn(p.run) for p in peers]
    try:
        dm_phase(peers, args.rate, min(1.0, args.seconds))            # warm up, not reported
        rows = [phase(peers, probe, None, args)]
        for name in args.cases:
            gevent.sleep(SETTLE)
            case = make[name]()
            reading = gevent.spawn(case.run) if isinstance(case, Abuser) else None
            try:
                rows.append(phase(peers, probe, case, args))
            finally:
                if reading is not None:
                    reading.kill()
                case.close()
        return rows
    finally:
        gevent.killall(greenlets)
        for p in peers:
            p.sock.close()


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tools.bench.abuse_flood")
    add_dm_args(p)
    p.add_argument("--login-rate", type=float, default=4, help="password logins/s of the legitimate user")
    p.add_argument("--cases", nargs="+", choices=CASES, default=CASES, help="abuse cases, in this order")
    add_cluster_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    rows = []
    for rep in range(args.repeat):
        got = _with_cluster(args, lambda c, t: run(c, t, args), 2 * args.pairs + PROBE_USERS + 2,
                            extra=dm_extra())
        rows.extend(dict(r, run=rep) for r in got)
    print(f"\nabuse flood: {args.pairs} DM pairs at {args.rate:g} msgs/s, a password login "
          f"{args.login_rate:g}/s, {args.seconds:g} s a phase, default gate limits")
    print(common.table(rows, ["run", "case", "dm_acked", "dm_errors", "dm_unanswered", "p50_ms", "p99_ms",
                              "login_p99_ms", "logins", "login_err", "sent", "flood_s", "expect", "answers"]))
    ok = True
    for name in ["quiet", *args.cases]:
        mine = [r for r in rows if r["case"] == name]
        p99 = statistics.median(r["p99_ms"] for r in mine)
        login = statistics.median(r["login_p99_ms"] for r in mine)
        errs = sum(r["got_expected"] for r in mine)
        ok = ok and p99 < 50 and errs == len(mine)
        print(f"{name:>12}: DM p99 {p99:.1f} ms, login p99 {login:.1f} ms (medians of {len(mine)})"
              + ("" if name == "quiet" else f", its error in {errs}/{len(mine)} runs"))
    print("every case got its error and DM p99 < 50 ms throughout:", "yes" if ok else "NO")
    print("report:", common.write_report("abuse_flood", rows, vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
