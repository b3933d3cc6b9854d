"""Slot math: conversation -> slot -> zone.

A conversation hashes (CRC-32) to one of ``slots`` slots; the slot table maps each slot
to the zone that is the single writer of its conversations. Center owns the table and
versions it; every node can compute the initial table from the config alone.
"""
from __future__ import annotations

import zlib


def slot_of(conv: str, slots: int) -> int:
    return zlib.crc32(conv.encode("utf-8")) % slots


class SlotTable:
    __slots__ = ("version", "owners")

    def __init__(self, owners: list[str], version: int = 1):
        if not owners:
            raise ValueError("a slot table needs at least one slot")
        self.owners = list(owners)
        self.version = version

    @classmethod
    def initial(cls, zones: list[str], slots: int) -> "SlotTable":
        """Deal slots round-robin over the zones in name order."""
        if not zones:
            raise ValueError("no zones to own slots")
        ordered = sorted(zones)
        return cls([ordered[i % len(ordered)] for i in range(slots)])

    def zone_of(self, conv: str) -> str:
        return self.owners[slot_of(conv, len(self.owners))]

    def slots_of(self, zone: str) -> list[int]:
        return [i for i, owner in enumerate(self.owners) if owner == zone]

    def reassign(self, dead: str, alive: list[str]) -> "SlotTable":
        """A new version with the dead zone's slots dealt over the live ones."""
        if not alive:
            raise ValueError("no live zone to take over")
        ordered = sorted(alive)
        owners, k = [], 0
        for owner in self.owners:
            if owner == dead:
                owner, k = ordered[k % len(ordered)], k + 1
            owners.append(owner)
        return SlotTable(owners, self.version + 1)
