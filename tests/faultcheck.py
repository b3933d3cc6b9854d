"""The fault suite's checker: pure functions over the histories a run recorded. No I/O.

tests/integration/test_fault_suite.py records three things: every send of its writers
(first tried during which fault, and every ack it got), the final history of every
conversation (a full ``sync`` at the end), and every reader's live streams, one ``Epoch``
per session (a login up to the connection's end). ``check`` judges them against
docs/protocol.md §7:

- lost: an acked message that the history does not hold at its acked seq;
- dup: a cid stored twice, a seq listed twice, acks of one cid with different seqs, or a
  seq pushed twice to one session;
- gaps: a seq between 1 and the last that the history does not hold;
- reorders: one writer's messages to one conversation not in its send order (a writer has
  one send in flight and resends it, with its cid, until acked), a history page out of seq
  order, or a session pushed a seq below one it already got;
- live holes: a seq that a session, connected all along, was not pushed, although the
  history has it and the session got both a smaller and a larger one, or stayed connected
  to the end. A session pushes from seq ``floor + 1`` on: readers never ``recv``, so every
  login replays each conversation from its start.

The counts are kept per fault kind: the fault during which the message was first sent.
Each problem is also described in ``Report.problems``, for the assertion message.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

COLUMNS = ("sends", "acked", "lost", "dup", "gaps", "reorders", "live_holes")
FAILURES = COLUMNS[2:]
UNKNOWN = "?"           # a problem no send of ours explains (a cid nobody sent)


@dataclass
class Send:
    writer: str
    conv: str
    cid: str
    fault: str                                   # the fault kind at the first attempt
    acks: list = field(default_factory=list)     # the seq of every ack it got


@dataclass
class Stored:
    seq: int
    cid: str
    sender: str


@dataclass
class Epoch:
    """One session of a reader: its live ``msg`` pushes in arrival order, (conv, seq, cid)."""
    reader: str
    convs: tuple                                 # the DMs and groups the reader is in
    pushes: list = field(default_factory=list)
    connected_at_end: bool = False
    floor: dict = field(default_factory=dict)    # conv -> seqs up to this are not expected


@dataclass
class Report:
    rows: dict                                   # fault kind -> {column: count}
    problems: list

    def failures(self) -> int:
        return sum(row[c] for row in self.rows.values() for c in FAILURES)

    def total(self, column: str) -> int:
        return sum(row[column] for row in self.rows.values())


class _Tally:
    def __init__(self, faults):
        self.rows = {f: dict.fromkeys(COLUMNS, 0) for f in faults}
        self.problems = []

    def add(self, fault: str, column: str, what: str | None = None, n: int = 1) -> None:
        self.rows.setdefault(fault, dict.fromkeys(COLUMNS, 0))[column] += n
        if what is not None:
            self.problems.append(f"{column} [{fault}] {what}")


def check(sends: list, history: dict, epochs: list, faults=()) -> Report:
    """``sends``: [Send] in each writer's send order; ``history``: {conv: [Stored] as the
    sync returned them}; ``epochs``: [Epoch]; ``faults``: kinds to list even when empty."""
    tally = _Tally(list(faults) + sorted({s.fault for s in sends} - set(faults)))
    fault_of = {(s.conv, s.cid): s.fault for s in sends}
    at = {conv: {m.seq: m for m in msgs} for conv, msgs in history.items()}
    for s in sends:
        tally.add(s.fault, "sends")
        if s.acks:
            tally.add(s.fault, "acked")
    _check_acked(sends, at, tally)
    _check_history(history, fault_of, tally)
    _check_send_order(sends, tally)
    for epoch in epochs:
        _check_epoch(epoch, at, fault_of, tally)
    return Report(tally.rows, tally.problems)


def _check_acked(sends, at, tally) -> None:
    for s in sends:
        seqs = sorted(set(s.acks))
        if len(seqs) > 1:
            tally.add(s.fault, "dup", f"{s.conv} {s.cid} acked as seqs {seqs}")
        for seq in seqs:
            stored = at.get(s.conv, {}).get(seq)
            if stored is None or stored.cid != s.cid:
                held = "nothing" if stored is None else f"cid {stored.cid}"
                tally.add(s.fault, "lost", f"{s.conv} {s.cid} acked as seq {seq}; the history holds {held} there")


def _check_history(history, fault_of, tally) -> None:
    for conv, msgs in history.items():
        seqs = [m.seq for m in msgs]
        for prev, m in zip(msgs, msgs[1:]):
            if m.seq < prev.seq:
                tally.add(fault_of.get((conv, m.cid), UNKNOWN), "reorders",
                          f"{conv}: the history lists seq {m.seq} after {prev.seq}")
        for seq, n in collections.Counter(seqs).items():
            if n > 1:
                cid = next(m.cid for m in msgs if m.seq == seq)
                tally.add(fault_of.get((conv, cid), UNKNOWN), "dup", f"{conv}: seq {seq} listed {n} times", n - 1)
        for cid, n in collections.Counter(m.cid for m in msgs).items():
            if n > 1:
                tally.add(fault_of.get((conv, cid), UNKNOWN), "dup", f"{conv}: cid {cid} stored {n} times", n - 1)
        present = set(seqs)
        for seq in range(1, max(present, default=0) + 1):
            if seq not in present:
                tally.add(_nearest_fault(conv, seq, msgs, fault_of), "gaps", f"{conv}: seq {seq} is missing")


def _nearest_fault(conv, seq, msgs, fault_of) -> str:
    """A missing seq has no cid: blame the send stored right after it (else right before)."""
    after = [m for m in msgs if m.seq > seq]
    near = min(after, key=lambda m: m.seq) if after else max(msgs, key=lambda m: m.seq)
    return fault_of.get((conv, near.cid), UNKNOWN)


def _check_send_order(sends, tally) -> None:
    last: dict = {}
    for s in sends:
        if not s.acks:
            continue
        key, seq = (s.writer, s.conv), min(s.acks)
        if key in last and seq < last[key][0]:
            tally.add(s.fault, "reorders", f"{s.conv}: {s.writer}'s {s.cid} stored as seq {seq}, "
                                           f"before its earlier {last[key][1]} (seq {last[key][0]})")
        last[key] = max(last.get(key, (0, ""))[0], seq), s.cid


def _check_epoch(epoch: Epoch, at, fault_of, tally) -> None:
    by_conv = collections.defaultdict(list)
    for conv, seq, cid in epoch.pushes:
        by_conv[conv].append((seq, cid))
    who = f"{epoch.reader}'s session"
    for conv in set(epoch.convs) | set(by_conv):
        pushed = by_conv.get(conv, [])
        seen, top = set(), 0
        for seq, cid in pushed:
            fault = fault_of.get((conv, cid), UNKNOWN)
            if seq in seen:
                tally.add(fault, "dup", f"{who}: {conv} seq {seq} pushed twice")
            elif seq < top:
                tally.add(fault, "reorders", f"{who}: {conv} seq {seq} pushed after {top}")
            seen.add(seq)
            top = max(top, seq)
        stored = at.get(conv, {})
        end = max(stored, default=0) if epoch.connected_at_end else top
        for seq in range(epoch.floor.get(conv, 0) + 1, end + 1):
            if seq not in seen and seq in stored:
                m = stored[seq]
                tally.add(fault_of.get((conv, m.cid), UNKNOWN), "live_holes",
                          f"{who}: {conv} seq {seq} ({m.cid}) never pushed, though it stayed connected")


def format_table(report: Report) -> str:
    """The report as a text table, one row per fault kind and a total."""
    head = ["fault"] + list(COLUMNS)
    rows = [[fault] + [str(row[c]) for c in COLUMNS] for fault, row in report.rows.items()]
    rows.append(["total"] + [str(report.total(c)) for c in COLUMNS])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
