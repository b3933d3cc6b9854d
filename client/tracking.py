"""The client's bookkeeping: seqs per conversation and the sends not acked yet. No I/O.

``client.Client`` feeds it every ``msg`` push and every ``ack``; it calls ``deliver(st,
msg)`` for what the app should see and ``start_fill(st)`` when a durable conversation
has a hole to ``sync`` (the client does the I/O, then hands the history back).

Per conversation ``last`` is the highest seq the app has, contiguous from where the
client started: its first push sets that base (``seq - 1``), or, once the offline replay
is over, the conversation's last seq in ``welcome.convs`` if the replay brought none. Own
acked seqs above ``last`` are kept in ``own`` and count as seen. Rules:

- a push at or below ``last`` (or already held, or own) is a duplicate: dropped, ``dups``;
- a push below one seen before, not a duplicate: ``out_of_order`` (kept);
- DM/group (durable): a push past ``last + 1`` is held; the client waits for its own
  acks in flight (they may close the hole), then syncs it (``gaps``, ``filled``); seqs
  the server cannot give are ``lost``; held pushes are released in order;
- room/``sys`` (live): a hole is counted (``gaps``, ``missed``) and the push delivered,
  unless an own send to it is unacked: then held until the ack settles the question.
"""
from __future__ import annotations

from gevent.event import AsyncResult

from cluster import convs

OWN_MAX = 32           # own acked seqs kept above ``last`` before the pushes are given up
COUNTERS = ("dups", "gaps", "missed", "out_of_order", "filled", "lost", "fill_failed")


class PendingSend:
    """A send without ack yet; ``done`` gets the ack or the error reply."""

    __slots__ = ("conv", "cid", "body", "done")

    def __init__(self, conv: str, cid: str, body):
        self.conv, self.cid, self.body, self.done = conv, cid, body, AsyncResult()


class SendBook:
    """Sends without ack by (conv, cid), in the order sent: what a reconnect resends."""

    def __init__(self):
        self.pending: dict[tuple, PendingSend] = {}

    def add(self, conv: str, cid: str, body) -> PendingSend:
        """The pending send of (conv, cid), a new one unless the cid is pending already."""
        return self.pending.setdefault((conv, cid), PendingSend(conv, cid, body))

    def acked(self, ack: dict) -> None:
        p = self.pending.pop((ack.get("conv"), ack.get("cid")), None)
        if p is not None and not p.done.ready():
            p.done.set(ack)

    def settle(self, p: PendingSend, reply: dict) -> None:
        """An error reply ends a pending send (retry it with its cid); acks end in ``acked``."""
        if reply.get("t") != "ack" and self.pending.get((p.conv, p.cid)) is p:
            del self.pending[(p.conv, p.cid)]
            if not p.done.ready():
                p.done.set(reply)

    def to(self, conv: str) -> list[PendingSend]:
        return [p for p in self.pending.values() if p.conv == conv]

    def wake_all(self, exc: Exception) -> None:
        """Fail the ``send`` calls waiting (the connection is gone for good); keep the entries."""
        for p in self.pending.values():
            done, p.done = p.done, AsyncResult()
            if not done.ready():
                done.set_exception(exc)


class ConvState:
    """What the client saw of one conversation; ``last`` is None until a base is known."""

    __slots__ = ("conv", "durable", "last", "top", "own", "held", "target", "gap", "filling")

    def __init__(self, conv: str):
        self.conv, self.durable = conv, convs.is_durable(conv)
        self.last: int | None = None
        self.top = 0                               # highest seq pushed
        self.own: set[int] = set()                 # own acked seqs above ``last``
        self.held: dict[int, dict] = {}            # pushes waiting behind a hole
        self.target, self.gap, self.filling = 0, False, False


class SeqTracker:
    def __init__(self, deliver, start_fill, sending=lambda conv: False):
        self.deliver, self.start_fill, self.sending = deliver, start_fill, sending
        self.convs: dict[str, ConvState] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.since_welcome: set[str] = set()       # conversations pushed since the last welcome

    def conv(self, conv: str) -> ConvState:
        st = self.convs.get(conv)
        if st is None:
            st = self.convs[conv] = ConvState(conv)
        return st

    def last_seen(self, conv: str) -> int | None:
        st = self.convs.get(conv)
        return None if st is None else st.last

    # -- input ---------------------------------------------------------------------------
    def on_msg(self, m: dict) -> bool:
        """Track a ``msg`` push; False if it has no usable conv/seq (the caller passes it on)."""
        conv, seq = m.get("conv"), m.get("seq")
        if not isinstance(conv, str) or not isinstance(seq, int) or isinstance(seq, bool):
            return False
        st = self.conv(conv)
        self.since_welcome.add(conv)
        if st.last is None:
            st.last = min(seq, *st.own) - 1 if st.own else seq - 1
        self.absorb(st)
        if seq <= st.last or seq in st.held or seq in st.own:
            self.counters["dups"] += 1
            return True
        if seq < st.top:
            self.counters["out_of_order"] += 1
        st.top = max(st.top, seq)
        if seq == st.last + 1:
            self.advance(st, m)
        elif st.durable or st.filling or self.sending(conv):
            st.held[seq] = m                       # a hole during a fill is filled by it
            self.want_fill(st, gap=not st.filling)
        else:
            self.skip(st, seq)
            self.advance(st, m)
        return True

    def on_ack(self, conv, seq) -> None:
        if not isinstance(conv, str) or not isinstance(seq, int):
            return
        st = self.conv(conv)
        if st.last is None or seq > st.last:
            st.own.add(seq)
        if st.last is None and len(st.own) > OWN_MAX:
            st.last = min(st.own) - 1              # nothing pushed yet: our sends set the base
        self.absorb(st)
        if len(st.own) > OWN_MAX:                  # the pushes below our sends never came
            if st.durable:
                self.want_fill(st, max(st.own), gap=True)
            else:
                self.skip(st, min(st.own))
                st.last = min(st.own) - 1
                self.absorb(st)

    def on_join(self, joined: dict) -> None:
        """A ``joined`` reply. On a rejoin (after a reconnect) deliver what ``recent`` adds."""
        st = self.conv(joined.get("conv"))
        if st.last is not None:
            for m in joined.get("recent") or ():
                if isinstance(m, dict) and isinstance(m.get("seq"), int) and m["seq"] > st.last:
                    self.on_msg(m)
        last_seq = joined.get("last_seq")
        st.last = max(st.last or 0, last_seq if isinstance(last_seq, int) else 0)
        self.absorb(st)

    def forget(self, conv: str) -> None:
        self.convs.pop(conv, None)

    def on_welcome(self) -> set[str]:
        """A new session: returns the conversations known before it (for ``catch_up``)."""
        self.since_welcome = set()
        return {conv for conv, st in self.convs.items() if st.last is not None}

    def catch_up(self, welcome_convs: dict, known: set[str]) -> list[str]:
        """After the offline replay: fill what it left out, set the base of the rest.

        A DM/group known before the login or pushed since is filled up to its last seq in
        ``welcome.convs``. One the replay did not touch was read up to that seq (on another
        session): that seq is its base; its history is not wanted. Returns the DMs/groups.
        """
        self.refill_held()
        durable = [conv for conv, last_seq in welcome_convs.items()
                   if isinstance(conv, str) and convs.is_durable(conv) and isinstance(last_seq, int)]
        for conv in durable:
            st, last_seq = self.conv(conv), welcome_convs[conv]
            if st.last is None:
                st.last = last_seq
                self.absorb(st)
            elif last_seq > st.last and (conv in known or conv in self.since_welcome):
                self.want_fill(st, last_seq)
        return durable

    # -- filling -------------------------------------------------------------------------
    def want_fill(self, st: ConvState, target: int = 0, gap: bool = False) -> None:
        st.target, st.gap = max(st.target, target), st.gap or gap
        if not st.filling:
            st.filling = True
            self.start_fill(st)

    def refill_held(self) -> None:
        """Restart the fills a dropped connection interrupted."""
        for st in list(self.convs.values()):
            if st.held and not st.filling:
                self.want_fill(st)

    def fill_need(self, st: ConvState) -> int:
        """The seq the conversation must reach (durable only; 0 when nothing is needed)."""
        if not st.durable or st.last is None:
            return 0
        return max(st.target, min(st.held, default=0) - 1)

    def synced(self, st: ConvState, msgs) -> bool:
        """Take a ``history`` page of a fill; False (and ``fill_failed``) if it brought nothing."""
        if st.gap:
            self.counters["gaps"] += 1
            st.gap = False
        before = st.last
        for m in msgs:
            seq = m.get("seq") if isinstance(m, dict) else None
            if isinstance(seq, int) and seq > st.last:
                if st.held.pop(seq, None) is None and seq not in st.own:
                    self.counters["filled"] += 1   # a message the pushes had not brought
                self.skip(st, seq)
                self.advance(st, m)
        if st.last == before:
            self.counters["fill_failed"] += 1
            return False
        return True

    def end_fill(self, st: ConvState, keep_held: bool = False) -> None:
        """The fill is over: release what is held, counting the holes left as given up."""
        st.filling, st.target, st.gap = False, 0, False
        if keep_held:
            return
        for seq in sorted(st.held):
            if seq > st.last:
                self.skip(st, seq)
                self.advance(st, st.held[seq])
        st.held.clear()

    # -- moving ``last`` -----------------------------------------------------------------
    def absorb(self, st: ConvState) -> None:
        """Move ``last`` over own seqs and held pushes that are next in line."""
        while st.last is not None:
            nxt = st.last + 1
            if nxt in st.own:
                st.own.discard(nxt)
                st.last = nxt
            elif nxt in st.held:
                self._take(st, st.held.pop(nxt))
            else:
                return

    def advance(self, st: ConvState, m: dict) -> None:
        self._take(st, m)
        self.absorb(st)

    def _take(self, st: ConvState, m: dict) -> None:
        seq = m["seq"]
        st.last = seq
        if seq in st.own:                          # our own send: the app has its ack
            st.own.discard(seq)
        else:
            self.deliver(st, m)

    def skip(self, st: ConvState, seq: int) -> None:
        """Count the seqs between ``last`` and ``seq`` as given up: lost (durable) or missed."""
        if seq > st.last + 1:
            self.counters["lost" if st.durable else "missed"] += seq - st.last - 1
            if not st.durable:
                self.counters["gaps"] += 1
