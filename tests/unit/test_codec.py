"""The wire module: framing and strict decoding (pure logic)."""
import struct

import msgpack
import pytest
from hypothesis import given, strategies as st

import cluster  # noqa: F401
from cluster.codec import (FrameReader, ProtocolError, decode_body, encode_frame, frame,
                           msg_prefix, msg_record, pack_map_with_raw, packb, unpackb)


def test_frames_split_at_any_byte_boundary_give_the_same_bodies():
    stream = b"".join(encode_frame({"t": "ping", "rid": i}) for i in range(50))
    for step in (1, 2, 3, 7, 64, len(stream)):
        reader = FrameReader()
        bodies = []
        for i in range(0, len(stream), step):
            bodies += reader.feed(stream[i:i + step])
        assert [decode_body(b)["rid"] for b in bodies] == list(range(50))
        assert reader.pending == 0


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers(-2**63, 2**64 - 1) | st.text(max_size=20), max_size=4),
                max_size=10),
       st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_property_any_split_gives_same_frames(maps, cuts):
    maps = [dict(m, t="x") for m in maps]
    stream = b"".join(encode_frame(m) for m in maps)
    reader, got, pos = FrameReader(), [], 0
    for cut in cuts:
        got += reader.feed(stream[pos:pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert [decode_body(b) for b in got] == maps


@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_give_frames_or_one_clear_error(data):
    reader = FrameReader(max_frame=128)
    try:
        for body in reader.feed(data):
            try:
                decode_body(body)
            except ProtocolError as exc:
                assert exc.code == "bad_frame"
    except ProtocolError as exc:
        assert exc.code == "bad_frame"


@pytest.mark.parametrize("length", [0, 65537, 2 ** 32 - 1])
def test_bad_lengths_are_bad_frame(length):
    with pytest.raises(ProtocolError) as exc:
        FrameReader(65536).feed(struct.pack(">I", length) + b"\x80")
    assert exc.value.code == "bad_frame"


def test_max_frame_is_allowed():
    body = packb({"t": "x", "pad": "a" * (65536 - 20)})
    reader = FrameReader(len(body))
    assert reader.feed(frame(body)) == [body]
    with pytest.raises(ProtocolError):
        FrameReader(len(body) - 1).feed(frame(body))


@pytest.mark.parametrize("body, why", [
    (packb([1, 2]), "not a map"),
    (packb({"x": 1}), "no string 't'"),
    (packb({"t": 5}), "no string 't'"),
    (packb({"t": "a", 1: 2}), "non-string key"),
    (packb({"t": "a"}) + b"\x01", "bytes left"),
    (b"\xc1", "not msgpack"),
    (packb({"t": "a"})[:-1], "not msgpack"),
])
def test_bad_bodies_are_bad_frame(body, why):
    with pytest.raises(ProtocolError) as exc:
        decode_body(body)
    assert exc.value.code == "bad_frame"
    assert why in exc.value.reason


def test_stored_record_is_the_msg_push():
    body_raw = packb({"text": "hi", "n": [1, 2]})
    prefix = msg_prefix("d:a:b", "a", 1700000000000, "c1", body_raw)
    record = msg_record(prefix, 42)
    assert unpackb(record) == {"t": "msg", "conv": "d:a:b", "from": "a", "ts": 1700000000000,
                               "cid": "c1", "body": {"text": "hi", "n": [1, 2]}, "seq": 42}


@pytest.mark.parametrize("n", [0, 1, 15, 16, 70000])
def test_pack_map_with_raw_embeds_encoded_items(n):
    items = [packb({"seq": i}) for i in range(n)]
    out = unpackb(pack_map_with_raw({"t": "history", "rid": 3}, "msgs", items))
    assert out["t"] == "history" and out["rid"] == 3
    assert len(out["msgs"]) == n and (n == 0 or out["msgs"][-1] == {"seq": n - 1})


def test_msgpack_map_header_sizes_match_library():
    for n in (0, 15, 16, 65535, 65536):
        assert msgpack.unpackb(pack_map_with_raw({f"k{i}": i for i in range(min(n, 3))}, "z", []),
                               raw=False)["z"] == []
