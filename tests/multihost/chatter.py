"""The client of the multi-host test, run inside the edge namespace (``ip netns exec``).

    python tests/multihost/chatter.py GATE1_HOST:PORT GATE2_HOST:PORT SECONDS

Registers two users (alice on gate1, bob on gate2) and has alice send bob one DM every
PACE seconds for SECONDS, each resent with its cid after every transient error (what an
app does) until acked. Prints one JSON line per event to stdout, flushed: ``{"ready":
...}`` once both are logged in, ``{"ack": cid, "seq": n, "t": ...}`` per ack, ``{"error":
code, "cid": cid, "t": ...}`` per transient answer; at the end ``{"history": [[seq,
cid], ...]}`` (alice's sync of the whole DM) and ``{"received": [[seq, cid], ...]}`` (what
bob's session got, in order). Bounded: it stops after SECONDS plus one patience.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import json
import sys
import time
import uuid

import gevent

from client import Client, ClientError, dm_conv

PACE = 0.1
PATIENCE = 60.0                 # seconds one message may take to be acked
TRANSIENT = ("unavailable", "timeout", "disconnected", "connect_failed")
PASSWORD = "multihost-pw-1"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def session(addr: str, name: str, received: list | None = None) -> Client:
    host, port = addr.rsplit(":", 1)
    def push(body):
        if received is not None and body.get("t") == "msg":
            received.append([body["seq"], body["cid"]])
    c = Client(host, int(port), timeout=5, on_push=push, auto_recv=True).connect()
    c.register(name, PASSWORD)
    c.login(name, PASSWORD)
    return c


def send_until_acked(c: Client, conv: str, cid: str, body: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            ack = c.send(conv, body, cid=cid)
            emit(ack=cid, seq=ack["seq"], t=time.time())
            return
        except ClientError as exc:
            if exc.code not in TRANSIENT or time.monotonic() > deadline:
                raise
            emit(error=exc.code, cid=cid, t=time.time())
            gevent.sleep(0.2)


def history(c: Client, conv: str) -> list:
    got, after = [], 0
    while True:
        page = c.sync(conv, after, 500)
        got += [[m["seq"], m["cid"]] for m in page["msgs"]]
        if not page["msgs"] or got[-1][0] >= page["last_seq"]:
            return got
        after = got[-1][0]


def main(gate1: str, gate2: str, seconds: float) -> None:
    tag = uuid.uuid4().hex[:8]
    received: list = []
    alice = session(gate1, f"alice{tag}")
    bob = session(gate2, f"bob{tag}", received)
    conv = dm_conv(alice.user, bob.user)
    emit(ready=True, conv=conv)
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        send_until_acked(alice, conv, f"m{i:05d}", f"message {i}")
        i += 1
        gevent.sleep(PACE)
    bob.ping()
    emit(history=history(alice, conv))
    emit(received=received)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
