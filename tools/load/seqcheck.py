"""The load users' own seq check, beside the client's tracker (client.tracking). No I/O.

Fed every ``msg`` a load user's app sees and every ``ack`` of its own sends. The rules
it holds the cluster to (PROTOCOL.md, guarantees 2, 3 and 5):

- within one session, a conversation's msgs come in increasing seq order, each once:
  a seq at or below the session's highest is ``dup`` (seen before) or ``out_of_order``;
- a seq seen in an earlier session and pushed again after a new login is
  ``redelivered`` (at-least-once replay): counted, not a failure;
- a seq up to the conversation's base pushed in the first session is ``earlier``: the
  offline replay of a message from before this user's first login (load accounts are
  reused from run to run: what reached them after an earlier run logged them out);
- a seq below the highest msg pushed that never arrives and is not an own send is a
  ``gap``. Own acks may land after later msgs, so a hole is only called a gap when it
  outlives ``grace`` seconds while no own send to that conversation is unacked, or at
  ``finish`` (less the sends still unacked then).

Seqs up to a conversation's base (``joined.last_seq``, ``welcome.convs``) predate the user.
"""
from __future__ import annotations

from collections import Counter

FAILURES = ("dup", "out_of_order", "gap")
GRACE = 5.0


class ConvSeqs:
    """What one user saw of one conversation; every seq <= ``low`` is accounted for."""

    __slots__ = ("low", "base", "seen", "top", "msg_top", "floor", "suspects")

    def __init__(self, low: int):
        self.low = self.base = low           # base: every seq up to it predates the user
        self.seen: set[int] = set()          # seqs above ``low`` seen
        self.top = 0                         # highest msg seq in this session
        self.msg_top = low                   # highest msg seq ever
        self.floor = low                     # highest seq seen before this session
        self.suspects: dict[int, float] = {}  # hole seq -> when first noticed

    def has(self, seq: int) -> bool:
        return seq <= self.low or seq in self.seen

    def mark(self, seq: int) -> None:
        if seq > self.low:
            self.seen.add(seq)
        while self.low + 1 in self.seen:
            self.low += 1
            self.seen.discard(self.low)

    def holes(self) -> list[int]:
        return [s for s in range(self.low + 1, self.msg_top) if s not in self.seen]


class SeqCheck:
    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self.convs: dict[str, ConvSeqs] = {}
        self.counts: Counter = Counter()     # dup, out_of_order, gap, redelivered, earlier
        self.sessions = 0

    def base(self, conv: str, last_seq: int) -> None:
        """Seqs up to ``last_seq`` predate us (a no-op once the conversation is known)."""
        if conv not in self.convs and isinstance(last_seq, int):
            self.convs[conv] = ConvSeqs(last_seq)

    def new_session(self) -> None:
        """A new login: what was seen so far may be pushed again (replay)."""
        self.sessions += 1
        for st in self.convs.values():
            st.floor = max([st.low, *st.seen])
            st.top = 0
            st.suspects.clear()

    def on_msg(self, conv: str, seq: int) -> str | None:
        """Check one pushed msg; returns its failure, ``redelivered`` or ``earlier`` (None when fine)."""
        st = self.convs.get(conv)
        if st is None:
            st = self.convs[conv] = ConvSeqs(seq - 1)
        if seq <= st.top:
            code = "dup" if st.has(seq) else "out_of_order"
        elif st.has(seq) and seq <= st.floor:
            code = "earlier" if seq <= st.base and self.sessions <= 1 else "redelivered"
        elif st.has(seq):
            code = "dup"
        else:
            code = None
        st.top = max(st.top, seq)
        st.msg_top = max(st.msg_top, seq)
        st.mark(seq)
        st.suspects.pop(seq, None)
        if code:
            self.counts[code] += 1
        return code

    def on_ack(self, conv: str, seq: int) -> None:
        st = self.convs.get(conv)
        if st is None:
            st = self.convs[conv] = ConvSeqs(seq - 1)
        st.mark(seq)
        st.suspects.pop(seq, None)

    def sweep(self, now: float, sending: set[str] = frozenset()) -> int:
        """Holes older than ``grace`` in conversations without unacked own sends: gaps."""
        found = 0
        for conv, st in self.convs.items():
            if conv in sending:
                continue
            for seq in st.holes():
                first = st.suspects.setdefault(seq, now)
                if now - first >= self.grace:
                    found += self._gap(st, seq)
        return found

    def finish(self, unacked: dict[str, int] | None = None) -> int:
        """The end of the user: every hole left is a gap, less its unacked own sends."""
        found = 0
        for conv, st in self.convs.items():
            holes = st.holes()
            excused = (unacked or {}).get(conv, 0)
            for seq in holes[: max(0, len(holes) - excused)]:
                found += self._gap(st, seq)
        return found

    def _gap(self, st: ConvSeqs, seq: int) -> int:
        st.suspects.pop(seq, None)
        st.mark(seq)                         # counted once
        self.counts["gap"] += 1
        return 1
