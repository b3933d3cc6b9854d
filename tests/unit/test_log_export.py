"""log.export: which store records make a conversation's export, and each line's fields."""
import json

import msgpack

from cluster import codec
from log import export
from log.logfile import LogWriter, Record, encode_record

TS = 1_700_000_000_000
CONV = "d:alice:bob"


def stored(conv: str, seq: int, sender: str, body, ts: int = TS, cid: str = "c") -> bytes:
    return codec.msg_record(codec.msg_prefix(conv, sender, ts, cid, msgpack.packb(body)), seq)


def store(conv: str, seq: int, sender: str = "alice", body="hi", ts: int = TS, node: str = "zone1") -> Record:
    cid = f"c{seq}"
    return Record(ts + 3, node, "store", [conv, seq, sender, cid, ts, stored(conv, seq, sender, body, ts, cid)])


def test_one_line_per_stored_message_of_the_conversation_only():
    records = [store(CONV, 1), store("d:alice:carol", 1), Record(TS, "gate1", "in", [1, "alice", b"x"]),
               store(CONV, 2, "bob", {"text": "hey", "n": 2}), store("r:lobby", 9)]
    lines = list(export.lines(records, CONV))
    assert [(line["seq"], line["from"], line["body"]) for line in lines] == [
        (1, "alice", "hi"), (2, "bob", {"text": "hey", "n": 2})]
    assert lines[0] == {"conv": CONV, "seq": 1, "from": "alice", "ts": TS, "cid": "c1", "body": "hi",
                        "logged": TS + 3, "node": "zone1"}


def test_a_seq_logged_twice_is_exported_once():
    lines = list(export.lines([store(CONV, 1, body="first"), store(CONV, 1, body="again", node="zone2"),
                               store(CONV, 2)], CONV))
    assert [(line["seq"], line["body"]) for line in lines] == [(1, "first"), (2, "hi")]


def test_a_record_from_before_bodies_were_logged_says_so():
    old = Record(TS, "zone1", "store", [CONV, 4, "alice", "c4", TS])
    (line,) = export.lines([old], CONV)
    assert line["seq"] == 4 and line["body"] is None and line["archived"] is False


def test_since_and_until_bound_the_send_time():
    records = [store(CONV, i, ts=TS + i * 1000) for i in range(1, 6)]
    lines = export.lines(records, CONV, since_ms=TS + 2000, until_ms=TS + 4000)
    assert [line["seq"] for line in lines] == [2, 3]


def test_export_writes_seq_order_whatever_the_log_order(tmp_path):
    writer = LogWriter(str(tmp_path / "log"), 1 << 20, 0)
    writer.open()
    writer.write([encode_record([r.ts_ms, r.node, r.kind, *r.fields]) for r in
                  (store(CONV, 2, node="zone2"), store(CONV, 1, node="zone1"), store(CONV, 3, node="zone2"))])
    writer.close()
    out: list[str] = []
    assert export.export(str(tmp_path), CONV, out.append) == 3
    assert [json.loads(text)["seq"] for text in out] == [1, 2, 3]


def test_export_reads_the_log_files_and_writes_json_lines(tmp_path):
    writer = LogWriter(str(tmp_path / "log"), 1 << 20, 0)
    writer.open()
    writer.write([encode_record([r.ts_ms, r.node, r.kind, *r.fields]) for r in
                  (store(CONV, 1, body="é ok"), store(CONV, 2, body=b"\xff raw"))])
    writer.close()
    out: list[str] = []
    assert export.export(str(tmp_path), CONV, out.append) == 2
    assert [json.loads(text)["body"] for text in out] == ["é ok", "\ufffd raw"]
    assert export.export(str(tmp_path / "nothing"), CONV, out.append) == 0
