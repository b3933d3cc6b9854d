"""Issue 12, point 3: zone failover with fencing, on a real cluster.

Zones beat to center every ``cluster.zone_heartbeat``; one silent past
``cluster.zone_timeout`` has its slots handed to the live zone, each moved slot's epoch
moved on in Redis first, and the store script refuses a store that carries an older
epoch. Shown here:

- the fence itself, through the real store on the real Redis: a store with the slot's
  old epoch is refused, stores nothing and assigns no seq; with the current one it stores;
- the zone handed a slot delivers again what the previous owner stored last (its
  journal in Redis: the same mechanism as a restarted zone's, zone/recent.py);
- a zone SIGSTOPped while writers send: its conversations move to the other zone and
  keep going (the test reports how long sends waited); SIGCONT: it is given its slots
  back (back to balance) and stores again; no store by it lands while it did not own
  them (the traffic log names the node of every store), no seq is assigned twice and
  every acked message is in the history at its seq.
"""
from __future__ import annotations

import signal
import time

import gevent
import gevent.event
import pytest

from cluster import convs
from cluster import slots as slots_mod
from cluster.codec import msg_prefix, packb
from dc import keys
from dc.store import FENCED, Fenced, GroupStore, Store, StoreItem
from harness import poll_for
from kit import (Clients, admin, conv_on_zone, fresh, log_records, redis_client, send_until_acked, slot_table,
                 zone_names)
from test_fault_suite import store_undelivered

TIMEOUT, BEAT = 2.0, 0.5
PACE = 0.1
PATIENCE = 30.0


@pytest.fixture(scope="module")
def cluster(start_cluster):
    return start_cluster({"cluster": {"zone_timeout": TIMEOUT, "zone_heartbeat": BEAT},
                          "gate": {"request_timeout": 2}})


@pytest.fixture
def clients(cluster):
    box = Clients(cluster)
    yield box
    box.close()


def center_slots(cluster) -> dict:
    return admin(cluster, "/v1/stats")["slots"]


def test_a_store_with_an_old_epoch_is_refused_and_assigns_nothing(cluster, clients):
    a = clients.user(fresh("fa"))
    b = clients.register()
    conv = convs.dm(a.user, b)
    assert a.send(conv, "before")["seq"] == 1
    store = Store.from_config(cluster.cfg, max_connections=1)
    table = slot_table(cluster)
    slot = table.slot(conv)
    fences = store.epochs(cluster.cfg.chat.slots)
    before, group_slot, group_before = fences[slot], None, 0
    try:
        now = store.bump_epochs([slot])[slot]           # as a handover does, the owner unaware

        def item(cid: str, epoch: int) -> StoreItem:
            ts = int(time.time() * 1000)
            return StoreItem(conv, a.user, cid, ts, msg_prefix(conv, a.user, ts, cid, packb("x")), epoch=epoch)
        assert store.store_batch([item("stale", now - 1)]) == [FENCED]
        assert store.last_seqs([conv])[conv] == 1 and store.dedup_hits([(conv, a.user, "stale")]) == {}
        [(seq, _, dup)] = store.store_batch([item("current", now)])
        assert (seq, dup) == (2, False)
        # a fence Redis lost (a failover before its INCR reached a replica): the new
        # owner's higher epoch raises it again, and the old epoch is refused after it
        [(seq, _, _)] = store.store_batch([item("higher", now + 1)])
        assert seq == 3 and store.epochs(cluster.cfg.chat.slots)[slot] == now + 1
        assert store.store_batch([item("old-again", now)]) == [FENCED]
        # group writes into the slot are fenced the same way
        group = conv_on_zone(cluster, table.zone_of(conv), lambda i: f"g:{fresh('fg')}{i}")
        group_slot = slot_table(cluster).slot(group)
        group_before = fences[group_slot]
        fence = store.bump_epochs([group_slot])[group_slot]
        with pytest.raises(Fenced):
            GroupStore(store, lambda c: fence - 1).create(group, a.user, [a.user])
        assert GroupStore(store).load(group) is None                 # nothing written
        GroupStore(store, lambda c: fence).create(group, a.user, [a.user])
        assert GroupStore(store).load(group) == (a.user, [a.user])
        store.bump_epochs([group_slot])
        with pytest.raises(Fenced):
            GroupStore(store, lambda c: fence).set_owner(group, "someone")
        assert GroupStore(store).load(group)[0] == a.user
    finally:       # the fence back where center's table has it: the zone owns the slot again
        r = redis_client(cluster)
        r.set(keys.Layout.epoch(slot), before)
        if group_slot is not None:
            r.set(keys.Layout.epoch(group_slot), group_before)
        r.close()
        store.close()


def dm_on(cluster, clients, zone: str):
    """A logged-in user and a DM of it that ``zone`` owns (the peer registered)."""
    a, base = clients.user(fresh("fw")), fresh("fp")
    conv = conv_on_zone(cluster, zone, lambda i: convs.dm(a.user, f"{base}{i}"))
    clients.register([u for u in convs.dm_users(conv) if u != a.user][0])
    return a, conv


def writer(client, conv: str, stop, acked: list, errors: list) -> None:
    i = 0
    while not stop.is_set():
        cid = f"{client.user}-{i}"
        try:
            seq = send_until_acked(client, conv, cid, f"w{i}", patience=PATIENCE, retry=0.2)
            acked.append((conv, cid, seq, time.time()))
        except AssertionError as exc:
            errors.append(str(exc))
            return
        i += 1
        gevent.sleep(PACE)


def test_a_paused_zone_loses_its_slots_is_fenced_and_gets_them_back(cluster, clients):
    zones = zone_names(cluster)
    victim, heir = zones[0], zones[1]
    balanced = slots_mod.SlotTable.initial(zones, cluster.cfg.chat.slots).counts()
    on_victim = [dm_on(cluster, clients, victim) for _ in range(3)]
    on_heir = [dm_on(cluster, clients, heir) for _ in range(2)]
    stop, acked, errors = gevent.event.Event(), [], []
    jobs = [gevent.spawn(writer, a, conv, stop, acked, errors) for a, conv in on_victim + on_heir]
    moved = {conv for _, conv in on_victim}
    try:
        poll_for(lambda: len(acked) >= 20, 20, "writers sending")
        cluster.kill(victim, signal.SIGSTOP)
        stopped = time.time()
        poll_for(lambda: victim not in center_slots(cluster)["owners"], 20, f"{victim}'s slots handed over")
        resumed = poll_for(lambda: next((t for c, _, _, t in acked if c in moved and t > stopped), None),
                           PATIENCE, f"a send to {victim}'s conversations acked by {heir}")
        cluster.kill(victim, signal.SIGCONT)
        poll_for(lambda: center_slots(cluster)["owners"] == balanced, 20, "slots back to balance")
        back = time.time()
        poll_for(lambda: sum(1 for c, _, _, t in acked if c in moved and t > back) >= 10, 20,
                 f"{victim} storing its conversations again")
    finally:
        cluster.kill(victim, signal.SIGCONT)
        stop.set()
        gevent.joinall(jobs, timeout=PATIENCE + 10)
    print(f"\nzone {victim} SIGSTOPped: its conversations acked again by {heir} after "
          f"{resumed - stopped:.1f}s (zone_timeout {TIMEOUT:g}s); {len(acked)} acked messages")
    assert not errors, errors[:3]
    check_no_write_by_the_old_owner(cluster, victim, stopped)
    check_histories(clients, on_victim + on_heir, acked)


def test_the_new_owner_delivers_what_the_old_one_stored_last(cluster, clients):
    """One mechanism with the restart's: the zone that gains a slot reads the previous
    owner's journal and delivers its last stores again (nothing later shows the hole)."""
    victim, heir = zone_names(cluster)
    a, conv = dm_on(cluster, clients, victim)
    b = clients.user([u for u in convs.dm_users(conv) if u != a.user][0], gate=1, register=False)
    first = a.send(conv, "one")["seq"]
    assert [m["seq"] for m in b.wait_msgs(conv, 1)] == [first]
    seq, _ = store_undelivered(cluster, conv, a.user, "stored-last", "the old owner's last", journal=victim)
    cluster.kill(victim, signal.SIGSTOP)
    try:
        poll_for(lambda: victim not in center_slots(cluster)["owners"], 20, f"{victim}'s slots handed over")
        got = poll_for(lambda: [m["seq"] for m in b.msgs(conv)] if len(b.msgs(conv)) >= 2 else None,
                       15, f"{heir} delivering the message {victim} stored last")
        assert got == [first, seq]
    finally:
        cluster.kill(victim, signal.SIGCONT)
    balanced = slots_mod.SlotTable.initial(zone_names(cluster), cluster.cfg.chat.slots).counts()
    poll_for(lambda: center_slots(cluster)["owners"] == balanced, 20, "slots back to balance")


def answered(fn):
    try:
        return fn()
    except Exception:        # center restarting: not answering yet
        return None


def test_a_center_that_lost_the_saved_table_catches_up_with_the_zones(cluster, clients):
    store = Store.from_config(cluster.cfg, max_connections=1)
    try:
        table = slot_table(cluster)
        store.save_table(50, table.owners, table.epochs)         # the zones learn version 50
        cluster.restart("center1")
        poll_for(lambda: answered(lambda: center_slots(cluster)["version"]) == 50, 20, "center at version 50")
        poll_for(lambda: answered(lambda: {z.get("table") for z in admin(cluster, "/v1/ops")["zones"]}) == {50},
                 20, "every zone holding version 50")
        r = redis_client(cluster)
        r.delete(keys.SLOT_TABLE)                                 # Redis loses center's table
        r.close()
        cluster.restart("center1")
        poll_for(lambda: (answered(lambda: center_slots(cluster)["version"]) or 0) > 50, 20,
                 "center's version past the one the zones hold")
    finally:
        store.close()
    for zone in zone_names(cluster):                              # and every zone stores
        a, conv = dm_on(cluster, clients, zone)
        assert send_until_acked(a, conv, fresh("after"), "after", patience=15) >= 1


def check_no_write_by_the_old_owner(cluster, victim: str, stopped: float) -> None:
    """From its pause until center handed its slots back, the paused zone stored nothing."""
    records = poll_for(lambda: log_records(cluster) or None, 10, "the traffic log")
    handback = [r for r in records if r.kind == "admin" and r.fields[:1] == ["slots"]
                and victim in r.fields[1]["owners"] and r.ts_ms > stopped * 1000]
    assert handback, "no handback recorded"
    window = (stopped * 1000, handback[0].ts_ms)
    landed = [r for r in records if r.kind == "store" and r.node == victim and window[0] < r.ts_ms < window[1]]
    assert not landed, f"{len(landed)} stores by {victim} while it owned nothing: {landed[:2]}"


def check_histories(clients, pairs, acked) -> None:
    for a, conv in pairs:
        page = a.sync(conv, 0, 500)["msgs"]
        seqs, cids = [m["seq"] for m in page], [m["cid"] for m in page]
        assert seqs == sorted(set(seqs)) and len(cids) == len(set(cids)), f"{conv}: a seq or message twice"
        by_seq = dict(zip(seqs, cids))
        mine = [(cid, seq) for c, cid, seq, _ in acked if c == conv]
        assert mine and all(by_seq.get(seq) == cid for cid, seq in mine), f"{conv}: an acked message lost"
