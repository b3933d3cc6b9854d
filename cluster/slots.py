"""Slot math: conversation -> slot -> zone, and who owns which slot when zones fail.

A conversation hashes (CRC-32) to one of ``slots`` slots; the slot table maps each slot
to the zone that is the single writer of its conversations, and carries each slot's
epoch: the fence the store script checks (dc/keys.py), so a zone that lost a slot can
no longer store into it. Center owns the table, versions it, keeps it in Redis and
publishes it (``Table``); every node can compute the initial one (version 1, epochs 0)
from the config alone.

``balanced(zones, alive, slots)`` is the owners center wants: the initial deal over the
configured zones, with each slot whose zone is not alive dealt over the live ones in
turn. It depends only on which zones are alive, so a zone that comes back gets exactly
its own slots back ("back to balance") and a second failure moves only that zone's.
"""
from __future__ import annotations

import zlib


def slot_of(conv: str, slots: int) -> int:
    return zlib.crc32(conv.encode("utf-8")) % slots


class SlotTable:
    __slots__ = ("version", "owners", "epochs")

    def __init__(self, owners: list[str], version: int = 1, epochs: list[int] | None = None):
        if not owners:
            raise ValueError("a slot table needs at least one slot")
        self.owners = list(owners)
        self.version = version
        self.epochs = list(epochs) if epochs is not None else [0] * len(self.owners)
        if len(self.epochs) != len(self.owners):
            raise ValueError("one epoch per slot")

    @classmethod
    def initial(cls, zones: list[str], slots: int) -> "SlotTable":
        """Deal slots round-robin over the zones in name order."""
        if not zones:
            raise ValueError("no zones to own slots")
        ordered = sorted(zones)
        return cls([ordered[i % len(ordered)] for i in range(slots)])

    def zone_of(self, conv: str) -> str:
        return self.owners[slot_of(conv, len(self.owners))]

    def slot(self, conv: str) -> int:
        return slot_of(conv, len(self.owners))

    def epoch_of(self, conv: str) -> int:
        return self.epochs[slot_of(conv, len(self.owners))]

    def slots_of(self, zone: str) -> list[int]:
        return [i for i, owner in enumerate(self.owners) if owner == zone]

    def counts(self) -> dict:
        out: dict = {}
        for owner in self.owners:
            out[owner] = out.get(owner, 0) + 1
        return out

    def moved_to(self, owners: list[str]) -> list[int]:
        """The slots whose owner ``owners`` changes."""
        return [i for i, (old, new) in enumerate(zip(self.owners, owners)) if old != new]

    def handed_over(self, owners: list[str], epochs: dict) -> "SlotTable":
        """The next version: ``owners``, and ``epochs`` {slot: new epoch} of the moved slots."""
        merged = [epochs.get(i, e) for i, e in enumerate(self.epochs)]
        return SlotTable(owners, self.version + 1, merged)

    def to_wire(self) -> tuple:
        return self.version, self.owners, self.epochs


def from_saved(saved, zones: list[str], slots: int) -> SlotTable:
    """The table center saved in Redis ((version, owners, epochs), see dc.store), or the
    initial one when there is none or it was made for another chat.slots."""
    if (saved is not None and len(saved[1]) == slots and len(saved[2]) == slots
            and set(saved[1]) <= set(zones)):
        return SlotTable(saved[1], saved[0], saved[2])
    return SlotTable.initial(zones, slots)


def reconciled(table: SlotTable, fences: list[int]) -> SlotTable | None:
    """A newer version of ``table`` carrying Redis's fences where they are higher (the
    saved table was lost or is behind), None when nothing is."""
    epochs = [max(mine, theirs) for mine, theirs in zip(table.epochs, fences)]
    if epochs == table.epochs:
        return None
    return SlotTable(table.owners, table.version + 1, epochs)


def newer(table: SlotTable, version: int, owners: list, epochs: list) -> SlotTable | None:
    """The table of a ``Table`` envelope when it is newer than ``table`` (and well formed)."""
    if version <= table.version or len(owners) != len(table.owners) or len(epochs) != len(owners):
        return None
    return SlotTable(owners, version, epochs)


def balanced(zones: list[str], alive, slots: int) -> list[str] | None:
    """The owners wanted when ``alive`` of ``zones`` run; None when none does."""
    live = sorted(set(alive) & set(zones))
    if not live:
        return None
    base = SlotTable.initial(zones, slots).owners
    out, k = [], 0
    for owner in base:
        if owner not in live:
            owner, k = live[k % len(live)], k + 1
        out.append(owner)
    return out
