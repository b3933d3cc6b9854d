"""Issue 11, point 1: the bus admits only nodes' CURVE keys.

A well-formed ``send`` envelope (cluster/envelopes.py) for a DM "from" a registered user
who never logged in is pushed straight to the bus port of the zone that owns the DM's
slot, as an attacker on the network would: with no keys (ZeroMQ's NULL mechanism), and
with a CURVE key pair of its own. Neither is stored, and the zone counts both refusals
(``bus_refused`` in its stats, seen in /v1/ops). The same push with a node's own key (the
gate1 key pair from ``<data_dir>/keys``) is stored — the one difference is the key, so the
refusals are the authentication's doing. The push with the valid key goes last: once it
is stored, an earlier push that had got through would have been stored before it.
"""
from __future__ import annotations

import json
import time
import urllib.request

import zmq

from cluster import envelopes, keys
from cluster.codec import packb
from cluster.convs import dm
from cluster.envelopes import Send
from harness import poll_for
from kit import redis_client, register, stored_records, zone_of


def send_envelope(user: str, conv: str, cid: str) -> bytes:
    body = packb({"t": "send", "conv": conv, "cid": cid, "body": f"forged {cid}"})
    deadline = int(time.time() * 1000) + 60_000
    return packb([envelopes.pack(Send("gate1", 1, user, conv, cid, body, False, deadline))])


def push(ctx, addr: str, frame: bytes, client_keys=None, server_key=None):
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    if client_keys is not None:
        sock.curve_publickey, sock.curve_secretkey = client_keys
        sock.curve_serverkey = server_key
    sock.connect(addr)
    sock.send(frame)            # queued until a handshake succeeds: never, when refused
    return sock


def ops(cluster) -> dict:
    host, port = cluster.admin_addr
    req = urllib.request.Request(f"http://{host}:{port}/v1/ops",
                                 headers={"Authorization": f"Bearer {cluster.secret}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def zone_refusals(cluster, zone: str) -> int:
    view = next(z for z in ops(cluster)["zones"] if z["node"] == zone)
    return view.get("bus_refused", 0)


def test_only_a_node_key_gets_an_envelope_in(cluster):
    alice, bob = register(cluster, None), register(cluster, None)
    conv = dm(alice, bob)
    zone = zone_of(cluster, conv)
    addr = cluster.cfg.node(zone).bus_addr
    server_key = keys.read_public(cluster.cfg)[zone]
    before = zone_refusals(cluster, zone)
    ctx = zmq.Context()
    socks = []
    try:
        socks.append(push(ctx, addr, send_envelope(alice, conv, "null")))
        socks.append(push(ctx, addr, send_envelope(alice, conv, "stranger"), zmq.curve_keypair(), server_key))
        poll_for(lambda: zone_refusals(cluster, zone) >= before + 2, 30, "the zone to count two refused peers")
        gate_key = keys.load(cluster.cfg, "gate1")
        socks.append(push(ctx, addr, send_envelope(alice, conv, "node-key"), (gate_key.public, gate_key.secret),
                          server_key))
        r = redis_client(cluster)
        stored = poll_for(lambda: stored_records(r, conv), 30, "the push with a node key to be stored")
    finally:
        for sock in socks:
            sock.close()
        ctx.term()
    assert [rec["cid"] for rec in stored.values()] == ["node-key"], stored
    assert "unknown CURVE key" in cluster.log_text(zone)


def test_center_counts_a_peer_without_keys(cluster):
    center = cluster.cfg.nodes_of("center")[0]
    before = ops(cluster)["center"]["bus_refused"]
    ctx = zmq.Context()
    try:
        sock = push(ctx, center.bus_addr, packb([]))
        poll_for(lambda: ops(cluster)["center"]["bus_refused"] > before, 30, "center to count the refused peer")
        sock.close()
    finally:
        ctx.term()
