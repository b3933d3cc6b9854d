"""python -m tools.redis_memory [--messages N] [--convs C] [--body B]: Redis bytes per
stored message, for docs/capacity.md.

A bench cluster (tools/bench/common.py, the managed Redis as shipped: AOF, everysec) gets
N DMs spread over C conversations, each stored by the zones' own store script
(``Store.store_batch``, the record a zone builds: ``msg_prefix``, a 32-hex-digit cid as
the clients send, a ``body``-byte string). Redis' ``used_memory`` is read before, after,
and after deleting the dedup keys (``dd:*``, which expire after ``chat.dedup_ttl``), so
the history (``m:``, ``seq:``) and the dedup window are told apart. Prints one line per
part and a JSON line.
"""
from __future__ import annotations

import cluster  # noqa: F401  (gevent patching first)

import argparse
import json
import tempfile
import uuid

import redis

from cluster import secrets
from cluster.codec import msg_prefix, packb
from dc.store import Store, StoreItem
from tools.bench import common

BATCH = 500             # messages per store call (a busy zone tick stores about as many)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.redis_memory")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--convs", type=int, default=1_000)
    p.add_argument("--body", type=int, default=40, help="bytes of text per message body")
    return p.parse_args(argv)


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def fill(store: Store, messages: int, convs: int, body: int) -> None:
    text = packb("x" * body)
    items = []
    for i in range(messages):
        a, b = f"p{i % convs:06d}a", f"p{i % convs:06d}b"
        conv = f"d:{a}:{b}"
        sender = a if i % 2 else b
        cid = uuid.uuid4().hex
        ts = 1_800_000_000_000 + i
        items.append(StoreItem(conv, sender, cid, ts, msg_prefix(conv, sender, ts, cid, text), index=f"{a} {b}"))
        if len(items) == BATCH:
            store.store_batch(items)
            items = []
    store.store_batch(items)


def delete_dedup(r: redis.Redis) -> int:
    gone = 0
    for chunk in _chunks(r.scan_iter(match="dd:*", count=5000), 5000):
        gone += r.delete(*chunk)
    return gone


def _chunks(it, n):
    chunk = []
    for item in it:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv=None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="zcmem-") as tmp:
        cl = common.BenchCluster(common.bench_config(tmp, gates=1, zones=1)).start()
        try:
            r = redis.Redis.from_url(secrets.redis_url(cl.cfg))
            store = Store.from_config(cl.cfg)
            before = used(r)
            fill(store, args.messages, args.convs, args.body)
            after = used(r)
            delete_dedup(r)
            history = used(r)
        finally:
            cl.stop()
    n = args.messages
    out = {"messages": n, "convs": args.convs, "body_bytes": args.body,
           "bytes_per_message": round((after - before) / n, 1),
           "history_bytes_per_message": round((history - before) / n, 1),
           "dedup_bytes_per_message": round((after - history) / n, 1)}
    print(f"{n:,} DMs over {args.convs:,} conversations, {args.body}-byte bodies:")
    print(f"  history (m:, seq:, ucv:)      {out['history_bytes_per_message']:8.1f} bytes per message")
    print(f"  dedup window (dd:, 24 h)      {out['dedup_bytes_per_message']:8.1f} bytes per message")
    print(f"  both                          {out['bytes_per_message']:8.1f} bytes per message")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
