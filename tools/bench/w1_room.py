"""W1 room fan-out: M members in one room, S senders, total rate stepped up.

Receivers only count frames; senders are the probes: they decode what they get and time
``send -> msg`` of the others' messages (the sender's timestamp rides in the body) to the
kernel's receive time of the data (SO_TIMESTAMPNS), not to when this busy generator got
round to reading it. A step
passes while delivered >= 99.9% and p99 < 250 ms; the capacity is the last passing step's
deliveries per second. A step is marked invalid (a lower bound only) when the generator's
own core was above 90% busy.

With ``passive`` (a fraction of the receivers, ``--passive 0.9``) those receivers join
with ``mode: "passive"``: they get no room ``msg`` but one ``digest`` per
``chat.passive_window``; they decode it, sum its ``count`` and check that it starts where
the previous one ended (``DigestTally``). Senders stay active. Such a step also needs
``passive_cover`` (digest counts / (sent x passive receivers)) >= 99.9%, and its per-second
figures are the step's totals (counted until settled) over the sending window, so the
digest that follows the last send is in the step without its wait diluting the rates.

Past ``per_process`` members (the machine allows 20,000 open files a process) the
receivers are split over generator subprocesses (``tools.bench.w1_client``, as W4 does),
all on the load core, their counts read over a pipe and their CPU counted in gen_busy.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

import gevent

from cluster.codec import FrameReader, encode_frame, unpackb
from tools.bench.common import REPO, FrameCounter, login_lean, percentile, top_processes
from tools.bench.sources import connect

ROOM = "r:bench"
PER_PROCESS = 15000          # client sockets one generator process holds (limit: 20,000 files)
PASS_RATIO, PASS_COVER, PASS_P99 = 0.999, 0.999, 250.0


class Receiver:
    def __init__(self, addr, user, token, i: int = 0):
        self.sock = connect(addr, i)        # client i's own loopback address (sources.py)
        login_lean(self.sock, user, token, ROOM)
        self.counter = FrameCounter()

    def run(self) -> None:
        recv, feed = self.sock.recv, self.counter.feed
        while True:
            data = recv(262144)
            if not data:
                return
            feed(data)


class DigestTally:
    """One passive viewer's digests: how many seqs they covered, and whether they did so
    exactly (spec: from_seq = previous to_seq + 1, the first joined.last_seq + 1;
    count = to_seq - from_seq + 1; recent = the newest <= keep messages of the range;
    at most one per window).

    gaps:  a from_seq other than the previous to_seq + 1 (a hole or an overlap)
    bad:   a digest whose fields do not agree (conv, count vs. range, non-positive count)
    short: ``recent`` not the min(count, keep) newest of the range (out of range, too
           many or too few, or its newest not to_seq)
    early: a digest less than half a window after the previous one (arrival times)
    """

    __slots__ = ("next_from", "window", "keep", "conv", "digests", "cover", "gaps", "bad",
                 "short", "early", "last_at")

    def __init__(self, last_seq: int | None, window: float = 1.0, keep: int = 5, conv: str = ROOM):
        self.next_from = None if last_seq is None else last_seq + 1
        self.window, self.keep, self.conv = window, keep, conv
        self.digests = self.cover = self.gaps = self.bad = self.short = self.early = 0
        self.last_at = None

    def feed(self, m: dict, now: float) -> None:
        self.digests += 1
        first, last, count = m.get("from_seq"), m.get("to_seq"), m.get("count")
        if not all(isinstance(v, int) for v in (first, last, count)):
            self.bad += 1
            return
        if self.next_from is not None and first != self.next_from:
            self.gaps += 1
        if m.get("conv") != self.conv or count != last - first + 1 or count <= 0:
            self.bad += 1
        recent = m.get("recent")
        seqs = [r.get("seq") for r in recent if isinstance(r, dict)] if isinstance(recent, list) else []
        if (not isinstance(recent, list) or len(seqs) != len(recent)
                or len(seqs) != min(max(count, 0), self.keep)
                or any(not isinstance(s, int) or not first <= s <= last for s in seqs)
                or (seqs and max(seqs) != last)):
            self.short += 1
        if self.last_at is not None and now - self.last_at < 0.5 * self.window:
            self.early += 1
        self.cover += count
        self.next_from = last + 1
        self.last_at = now


class PassiveReceiver:
    """Joins passive; decodes every frame (a digest a window), tallies the digests and
    counts room msgs it should never get."""

    def __init__(self, addr, user, token, i: int = 0, window: float = 1.0, keep: int = 5):
        self.sock = connect(addr, i)
        joined: dict = {}
        login_lean(self.sock, user, token, ROOM, mode="passive", joined=joined)
        self.tally = DigestTally(joined.get("last_seq"), window, keep)
        self.reader = FrameReader(1 << 21)
        self.msgs = 0

    def run(self) -> None:
        recv, feed, tally = self.sock.recv, self.reader.feed, self.tally
        while True:
            data = recv(262144)
            if not data:
                return
            now = time.monotonic()
            for body in feed(data):
                m = unpackb(body)
                t = m.get("t")
                if t == "digest":
                    tally.feed(m, now)
                elif t == "msg" and m.get("conv") == ROOM:
                    self.msgs += 1


class Sender:
    def __init__(self, addr, user, token, i: int = 0):
        self.user = user
        self.sock = connect(addr, i)
        login_lean(self.sock, user, token, ROOM)
        self.reader = FrameReader(1 << 21)
        self.lat: list = []
        self.acks = self.msgs = self.errors = 0
        self.cids = itertools.count()

    def run(self) -> None:
        """Time each msg from its body's ts to the kernel's receive time of the data
        (SO_TIMESTAMPNS), so the generator's own delay in reading it is not counted."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        space = socket.CMSG_SPACE(_TS.size)
        while True:
            data, anc, _flags, _addr = self.sock.recvmsg(262144, space)
            if not data:
                return
            now = arrival(anc) * 1000
            for body in self.reader.feed(data):
                m = unpackb(body)
                t = m.get("t")
                if t == "msg":
                    self.msgs += 1
                    self.lat.append(now - m["body"]["ts"])
                elif t == "ack":
                    self.acks += 1
                elif t == "error":
                    self.errors += 1

    def send(self) -> None:
        body = {"ts": time.time() * 1000, "pad": "x" * 40}
        self.sock.sendall(encode_frame({"t": "send", "rid": next(self.cids) + 10, "conv": ROOM,
                                        "cid": f"{self.user}-{next(self.cids)}", "body": body}))


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TS = struct.Struct("@qq")


def arrival(ancillary) -> float:
    """The kernel's receive time (seconds) in recvmsg's ancillary data; now if none."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TS.size:
            sec, nsec = _TS.unpack(raw[:_TS.size])
            return sec + nsec / 1e9
    return time.time()


def pace(sender, interval: float, until: float, phase: float = 0.0, start: float | None = None,
         limit: int | None = None) -> None:
    """Call ``sender.send()`` every ``interval`` seconds from ``phase`` of an interval after
    ``start`` (default: now) until ``until``, at most ``limit`` times. A common ``start``
    keeps the count exact (rate x seconds) however long spawning the pacers took."""
    nxt = (time.monotonic() if start is None else start) + phase * interval
    gevent.sleep(max(0.0, nxt - time.monotonic()))
    count = 0
    while nxt < until and (limit is None or count < limit):
        sender.send()
        count += 1
        nxt += interval
        gevent.sleep(max(0.0, nxt - time.monotonic()))


# -- who is where -------------------------------------------------------------------------
def is_passive(j: int, fraction: float) -> bool:
    """Receiver number ``j`` joins passive: spread evenly, round(n x fraction) of any
    first n receivers."""
    return fraction > 0 and round((j + 1) * fraction) - round(j * fraction) == 1


def split(members: int, per_process: int) -> list[tuple[int, int]]:
    """(first, count) of each generator process: as few as hold ``per_process`` each,
    evenly sized; the first is this process (the senders are users 0..S-1)."""
    n = max(1, -(-members // per_process))
    base, extra = divmod(members, n)
    out, first = [], 0
    for k in range(n):
        count = base + (1 if k < extra else 0)
        out.append((first, count))
        first += count
    return out


CONNECT_TRIES = 5      # a client the gate closed (its login deadline passed while login was busy)


def connect_all(factory, specs, concurrency: int = 200) -> list:
    from gevent.pool import Pool
    pool = Pool(concurrency)
    return list(pool.imap(lambda spec: connect_retrying(factory, spec), specs))


def connect_retrying(factory, spec):
    """``factory(*spec)``, again on a new connection when the gate closed the last one
    during its login (thousands logging in at once keep the login role busy past the
    gate's login deadline): what a real client does after a drop."""
    for attempt in range(CONNECT_TRIES):
        try:
            return factory(*spec)
        except ConnectionError as exc:
            if "closed during login" not in str(exc) or attempt == CONNECT_TRIES - 1:
                raise


def connect_receivers(specs, senders: int, passive: float, window: float, keep: int) -> list:
    """Receivers for ``specs`` (addr, user, token, i) with i >= senders: receiver number
    i - senders is passive by ``is_passive``."""
    def one(addr, user, token, i):
        if is_passive(i - senders, passive):
            return PassiveReceiver(addr, user, token, i, window, keep)
        return Receiver(addr, user, token, i)
    return connect_all(one, specs)


def pinger(conns, every: float = 20.0, until: float | None = None) -> None:
    """Keep receivers past the idle timeout (until ``until``, a monotonic time)."""
    frame = encode_frame({"t": "ping"})
    while until is None or time.monotonic() < until:
        gevent.sleep(every)
        for c in conns:
            try:
                c.sock.sendall(frame)
            except OSError:
                pass


# -- counts -------------------------------------------------------------------------------
STAT_KEYS = ("active", "passive", "frames", "digests", "cover", "gaps", "bad", "short",
             "early", "passive_msgs")


class LocalGroup:
    """Receivers of this process."""

    def __init__(self, receivers: list):
        self.receivers = receivers
        self.active = [r for r in receivers if isinstance(r, Receiver)]
        self.passive = [r for r in receivers if isinstance(r, PassiveReceiver)]

    def stats(self) -> dict:
        st = dict.fromkeys(STAT_KEYS, 0)
        st["active"], st["passive"] = len(self.active), len(self.passive)
        st["frames"] = sum(r.counter.frames for r in self.active)
        for r in self.passive:
            t = r.tally
            st["digests"] += t.digests
            st["cover"] += t.cover
            st["gaps"] += t.gaps
            st["bad"] += t.bad
            st["short"] += t.short
            st["early"] += t.early
            st["passive_msgs"] += r.msgs
        return st

    def close(self) -> None:
        for r in self.receivers:
            r.sock.close()


class RemoteGroup:
    """Receivers first..first+count-1 in a ``tools.bench.w1_client`` subprocess (it
    inherits the load core); ``stats`` asks it over its stdin, its stdout answers."""

    def __init__(self, cluster, first: int, count: int, senders: int, passive: float, lifetime: float):
        self.first, self.count = first, count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.w1_client", cluster.config_path, str(first),
             str(count), str(senders), repr(passive), str(lifetime)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _line(self, timeout: float, what: str) -> str:
        with gevent.Timeout(timeout, False):
            line = self.proc.stdout.readline()
            if line:
                return line
            raise RuntimeError(f"w1 generator {self.proc.pid} ended during {what} "
                               f"(exit {self.proc.poll()})")
        raise RuntimeError(f"w1 generator {self.proc.pid}: no answer to {what} in {timeout:.0f} s")

    def ready(self, timeout: float) -> dict:
        words = self._line(timeout, "its logins").split(maxsplit=1)
        if words[0] != "ready":
            raise RuntimeError(f"w1 generator {self.proc.pid}: {' '.join(words)}")
        return json.loads(words[1])

    def stats(self) -> dict:
        self.proc.stdin.write("s\n")
        self.proc.stdin.flush()
        return json.loads(self._line(30.0, "stats"))

    def close(self) -> None:
        """Close its stdin (it exits); past 20 s, SIGTERM then SIGKILL by its pid."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        for sig, wait in ((None, 20), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if sig is not None:
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def totals(groups, senders) -> dict:
    out = dict.fromkeys(STAT_KEYS, 0)
    for g in groups:
        for k, v in g.stats().items():
            out[k] = out.get(k, 0) + v
    out["sender_msgs"] = sum(s.msgs for s in senders)
    out["acks"] = sum(s.acks for s in senders)
    out["errors"] = sum(s.errors for s in senders)
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after}


def coverage(t: dict, base: dict, senders: int) -> tuple[int, int, int, int]:
    """(active deliveries, their expected count, digest cover, its expected count) of the
    totals ``t`` since ``base``: every acked message reaches every other active member
    (never its sender) and is covered once for every passive viewer."""
    d = diff(t, base)
    sent = d["acks"]
    active_members = senders + t["active"]
    return (d["frames"] + d["sender_msgs"], sent * max(0, active_members - 1),
            d["cover"], sent * t["passive"])


def settle(groups, senders, base: dict, expected_frames: int | None = None,
           timeout: float = 5.0, stall: float = 0.5) -> dict:
    """Wait until the counts reach what was sent or stop growing for ``stall`` seconds;
    the totals then. With ``expected_frames`` (the plain W1 step) the target is that many
    active frames; without, what the acks so far call for, digests included."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        t = totals(groups, senders)
        now = time.monotonic()
        if expected_frames is not None:
            if t["frames"] + t["sender_msgs"] >= expected_frames:
                return t
        else:
            got, want, cover, want_cover = coverage(t, base, len(senders))
            if got >= want and cover >= want_cover:
                return t
        key = (t["frames"], t["sender_msgs"], t["cover"], t["digests"], t["acks"])
        if key != last:
            last, since = key, now
        elif now - since >= stall - 1e-9:
            return t
        if now >= deadline:
            return t
        gevent.sleep(0.1)


def passes(row: dict) -> bool:
    cover = row.get("passive_cover")
    return (row["ratio"] >= PASS_RATIO and row["p99_ms"] < PASS_P99
            and (cover is None or cover >= PASS_COVER))


# -- one step -----------------------------------------------------------------------------
def run_step(groups, senders, rate: float, seconds: float, meter, send_window: bool = False,
             window: float = 1.0) -> dict:
    base = totals(groups, senders)
    for s in senders:
        s.lat.clear()
    meter.mark()
    interval = len(senders) / rate
    until = time.monotonic() + seconds
    jobs = [gevent.spawn(pace, s, interval, until, k / len(senders), None, int(seconds / interval) + 1)
            for k, s in enumerate(senders)]
    gevent.joinall(jobs)
    if not send_window:
        return _plain_row(groups, senders, base, rate, seconds, meter)
    passive = base["passive"] > 0
    t = settle(groups, senders, base, timeout=5.0 + (2 * window if passive else 0),
               stall=1.5 * window + 0.5 if passive else 0.5)
    cpu = meter.read()
    lat = [x for s in senders for x in s.lat]
    d = diff(t, base)
    got, want, cover, want_cover = coverage(t, base, len(senders))
    wall = cpu["wall"]
    server_s, gen_s = cpu["server_busy"] * wall, cpu["generator_busy"] * wall
    deliveries = got + d["digests"]
    return {"rate": rate, "sent": d["acks"], "errors": d["errors"], "passive": t["passive"],
            "active": len(senders) + t["active"], "active_msgs": got, "expected": want,
            "ratio": got / max(1, want), "digests": d["digests"],
            "passive_cover": cover / max(1, want_cover) if t["passive"] else None,
            "digest_gaps": d["gaps"], "digest_bad": d["bad"], "digest_short": d["short"],
            "digest_early": d["early"], "passive_msgs": d["passive_msgs"],
            "delivered": deliveries, "deliveries_s": deliveries / seconds,
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "server_busy": server_s / seconds,
            "per_core_s": deliveries / max(server_s, 1e-9), "gen_busy": gen_s / seconds,
            "valid": gen_s / seconds <= 0.9, "settle_s": wall - seconds}


def _plain_row(groups, senders, base, rate, seconds, meter) -> dict:
    """The W1 step as it always was: sent counted when sending ends, rates over the wall
    time up to settled."""
    members = base["active"] + base["passive"] + len(senders)
    f0 = base["frames"] + base["sender_msgs"]
    sent = sum(s.acks for s in senders) - base["acks"]
    t = settle(groups, senders, base, f0 + sent * (members - 1))
    cpu = meter.read()
    delivered = t["frames"] + t["sender_msgs"] - f0
    lat = [x for s in senders for x in s.lat]
    wall = cpu["wall"]
    return {"rate": rate, "sent": sent, "errors": sum(s.errors for s in senders) - base["errors"],
            "delivered": delivered, "expected": sent * (members - 1),
            "ratio": delivered / max(1, sent * (members - 1)),
            "deliveries_s": delivered / wall, "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99), "server_busy": cpu["server_busy"],
            "per_core_s": delivered / wall / max(cpu["server_busy"], 1e-9),
            "gen_busy": cpu["generator_busy"], "valid": cpu["generator_busy"] <= 0.9,
            "top": top_processes(cpu.get("per_process", {}), 3)}


# -- a run --------------------------------------------------------------------------------
def setup(cluster, tokens: dict, senders: int, passive: float = 0.0,
          per_process: int = PER_PROCESS, lifetime: float = 3600.0):
    """Senders and the first share of receivers here, the rest in subprocesses past
    ``per_process`` members. Returns (groups, senders, greenlets, remote groups)."""
    if per_process <= senders:
        raise ValueError(f"--per-process {per_process} must exceed --senders {senders}")
    gates = cluster.gates()
    names = sorted(tokens)
    chunks = split(len(names), per_process)
    chat = cluster.cfg.chat
    remote = []
    try:
        for first, count in chunks[1:]:     # they log in while this process does
            remote.append(RemoteGroup(cluster, first, count, senders, passive, lifetime))
        local = range(chunks[0][1])
        specs = [(gates[i % len(gates)], names[i], tokens[names[i]], i) for i in local]
        send_conns = connect_all(Sender, specs[:senders])
        recv_conns = connect_receivers(specs[senders:], senders, passive, chat.passive_window,
                                       chat.passive_recent)
        for g in remote:
            g.ready(timeout=120 + g.count / 50)
    except BaseException:
        for g in remote:
            g.close()
        raise
    greenlets = [gevent.spawn(c.run) for c in [*send_conns, *recv_conns]]
    greenlets.append(gevent.spawn(pinger, [*send_conns, *recv_conns], 20.0,
                                  time.monotonic() + lifetime))
    return [LocalGroup(recv_conns), *remote], send_conns, greenlets, remote


def run(cluster, tokens: dict, senders: int, rates: list, seconds: float, meter,
        passive: float = 0.0, per_process: int = PER_PROCESS, send_window: bool = False,
        stop_on_fail: bool = True) -> list[dict]:
    """The rates in turn on one set of sessions; stops after the first failing step unless
    ``stop_on_fail`` is off. ``send_window``: the passive accounting (run_step)."""
    lifetime = 900 + len(rates) * (seconds + 40)
    groups, send_conns, greenlets, remote = setup(cluster, tokens, senders, passive,
                                                  per_process, lifetime)
    rows = []
    try:
        for g in remote:
            meter.add_generator(g.proc.pid)
        window = cluster.cfg.chat.passive_window
        for rate in rates:
            row = run_step(groups, send_conns, rate, seconds, meter, send_window or passive > 0, window)
            row["members"] = len(tokens)
            rows.append(row)
            if stop_on_fail and not passes(row):
                break
    finally:
        gevent.killall(greenlets)
        groups[0].close()
        for c in send_conns:
            c.sock.close()
        for g in remote:
            g.close()
    return rows


def compare(active_runs: list[list[dict]], passive_runs: list[list[dict]]) -> list[dict]:
    """Side by side per rate, medians over the runs that reached it: deliveries/s, server
    CPU and latency of the all-active and the passive runs, and the cut (1 - passive /
    active) of deliveries and of CPU."""
    def med(runs, rate, key):
        vals = [r[key] for rows in runs for r in rows if r["rate"] == rate and r.get(key) is not None]
        vals = [v for v in vals if v == v]          # NaN (no latency sample) out
        return statistics.median(vals) if vals else None

    def ok(runs, rate):
        got = [passes(r) and r["valid"] for rows in runs for r in rows if r["rate"] == rate]
        return f"{sum(got)}/{len(got)}" if got else "-"

    rates = sorted({r["rate"] for rows in [*active_runs, *passive_runs] for r in rows})
    out = []
    for rate in rates:
        a_d, p_d = med(active_runs, rate, "deliveries_s"), med(passive_runs, rate, "deliveries_s")
        a_b, p_b = med(active_runs, rate, "server_busy"), med(passive_runs, rate, "server_busy")
        cut = lambda a, p: 1 - p / a if a and p is not None else None
        out.append({"rate": rate, "act_deliv_s": a_d, "pas_deliv_s": p_d, "deliv_cut": cut(a_d, p_d),
                    "act_busy": a_b, "pas_busy": p_b, "cpu_cut": cut(a_b, p_b),
                    "act_p50": med(active_runs, rate, "p50_ms"), "pas_p50": med(passive_runs, rate, "p50_ms"),
                    "act_p99": med(active_runs, rate, "p99_ms"), "pas_p99": med(passive_runs, rate, "p99_ms"),
                    "act_ok": ok(active_runs, rate), "pas_ok": ok(passive_runs, rate)})
    return out
