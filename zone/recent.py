"""What a new writer of a slot delivers again: the one recovery mechanism of a zone.

A zone that ends between its store call and its deliveries (SIGKILL, a crash, a pause
past ``cluster.zone_timeout``, a cut link) leaves messages that are stored but that no
online member got. Whoever writes those conversations next delivers them again:

- the zone's own next incarnation, at start (``Recovery.at_start``);
- a zone that center handed the slots to (``Recovery.on_table``: for each slot it gained,
  what the previous owner stored lately), and the first zone again when the slots come
  back to it.

Both read the same journal: before each store call a zone appends one entry per durable
conversation of the batch, ``<ms> <conv>`` (``ms`` the ts its messages get), to its list
in Redis, ``rj:{<zone>}`` (dc/keys.py), in the same round trip as the store (before the
script on one Redis; one pipeline ahead of the masters' on Redis Cluster). The list keeps
the newest ``JOURNAL_MAX`` entries. The reader picks the conversations written in the
last ``WINDOW_MS`` of the journal (none when it is older than ``MAX_AGE_MS``: what was
stored long ago was delivered, or brought by the members' logins since) and delivers the
messages of that window again; the gates drop the seqs a session already has and fill a
hole below one (gate/fills.py). A journal that Redis lost (a failover without the last
writes) costs only these re-deliveries; the gates' hole fill still covers every hole a
later message shows.
"""
from __future__ import annotations

import logging
import time

import gevent

from cluster import convs
from cluster.codec import unpackb
from dc.store import StoreUnavailable

WINDOW_MS = 5000          # deliver again what the journal's last 5 s stored
MAX_CONVS = 1000          # ... in at most this many conversations
PER_CONV = 32             # ... at most this many last messages of each
CHUNK = 100               # conversations read per pipeline (<= 3,200 records at a time)
TRIES = 5                 # attempts (a second apart) while the store is unavailable
MAX_AGE_MS = 120000       # a journal older than this is not delivered again

log = logging.getLogger("zonechat.zone.recent")


def entries(ms: int, conv_ids) -> list[bytes]:
    """The journal entries of one batch: one per durable conversation, in order, once."""
    return [b"%d %s" % (ms, c.encode()) for c in dict.fromkeys(conv_ids) if convs.is_durable(c)]


def parse(lines) -> list[tuple[int, str]]:
    """(ms, conv) of each well-formed entry (bytes), in order; anything else is skipped."""
    out = []
    for line in lines:
        parts = line.split(b" ")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            conv = parts[1].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if convs.valid(conv) and convs.is_durable(conv):
            out.append((int(parts[0]), conv))
    return out


def pick_recent(entries_, window_ms: int, max_convs: int, not_before: int = 0) -> list[tuple[str, int]]:
    """(conv, since_ms) per conversation written within ``window_ms`` of the newest entry:
    ``since_ms`` is its first entry in that window. At most ``max_convs`` of them, the ones
    written last first. None if the newest entry is older than ``not_before``."""
    newest = max((ms for ms, _ in entries_), default=0)
    if not entries_ or newest < not_before:
        return []
    since: dict = {}
    last: dict = {}
    for i, (ms, conv) in enumerate(entries_):
        if ms >= newest - window_ms:
            since[conv] = min(since.get(conv, ms), ms)
            last[conv] = i
    order = sorted(last, key=last.get, reverse=True)[:max_convs]
    return [(conv, since[conv]) for conv in order]


def gained_from(old, new, me: str) -> dict:
    """{previous owner: the slots it had in ``old`` that are ``me``'s in ``new``}."""
    gained: dict = {}
    for slot, (was, now) in enumerate(zip(old.owners, new.owners)):
        if now == me and was != me:
            gained.setdefault(was, set()).add(slot)
    return gained


class Recovery:
    """A zone's side of it: which journal to read when, and the delivering again."""

    def __init__(self, zone):
        self.zone = zone

    def at_start(self) -> None:
        """Before the first tick: what this zone's last incarnation stored last."""
        self.deliver_again(self.zone.name, lambda conv: self.zone.table.zone_of(conv) == self.zone.name)

    def on_table(self, old, new) -> None:
        """Slots this zone gained from others: what their previous owners stored last."""
        me = self.zone.name
        for previous, slots in gained_from(old, new, me).items():
            self.zone.spawn(self.deliver_again, previous,
                            lambda conv, s=slots: new.slot(conv) in s and self.zone.table.zone_of(conv) == me,
                            name=f"redeliver_from_{previous}")

    def deliver_again(self, writer: str, mine) -> int:
        """Deliver again the recent messages of ``writer``'s journal that ``mine(conv)``."""
        picked = self._picked(writer, mine)
        count, tries = 0, 0
        while picked and tries < TRIES:
            try:
                count += self._redeliver(picked[:CHUNK])
            except StoreUnavailable as exc:
                tries += 1
                log.warning("recent messages of %s not delivered again yet: %s", writer, exc)
                gevent.sleep(1.0)
                continue
            picked = picked[CHUNK:]
        if count:
            log.info("delivered %d recent messages of %s again", count, writer)
        return count

    def _picked(self, writer: str, mine) -> list:
        not_before = int(time.time() * 1000) - MAX_AGE_MS
        for attempt in range(TRIES):
            try:
                journal = parse(self.zone.store.journal(writer))
                break
            except StoreUnavailable as exc:
                log.warning("the journal of %s not read yet: %s", writer, exc)
                gevent.sleep(1.0)
        else:
            return []
        return pick_recent([(ms, c) for ms, c in journal if mine(c)], WINDOW_MS, MAX_CONVS, not_before)

    def _redeliver(self, picked: list) -> int:
        zone = self.zone
        last = zone.store.last_seqs([conv for conv, _ in picked])
        wanted = [(conv, max(0, last[conv] - PER_CONV), PER_CONV) for conv, _ in picked]
        count = 0
        for (conv, since), (records, _) in zip(picked, zone.store.history_many(wanted, max_bytes=None)):
            for record in records:
                m = unpackb(record)
                if m.get("ts", 0) < since:
                    continue
                sender = m.get("from")
                users = ([u for u in convs.dm_users(conv) if u != sender] if conv.startswith("d:")
                         else [u for u in zone.groups.members(conv) if u != sender])
                zone.send_dlv(zone.dlv_peers, users, conv, m["seq"], record)
                count += 1
        return count
