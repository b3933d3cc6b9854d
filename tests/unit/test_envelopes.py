"""The bus envelopes (cluster/envelopes.py), the doc table made from them, and replies."""
import os
import re

import pytest

import cluster  # noqa: F401
from cluster import envelopes
from cluster.codec import unpackb
from cluster.envelopes import Dlv, Join, Malformed, Rep
from cluster.replies import OK, Refused, error, with_rid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "architecture.md")
BEGIN, END = "<!-- envelopes: begin -->", "<!-- envelopes: end -->"
ROLE_DIRS = ("gate", "zone", "center", "login", "dc", "log")


def doc_table() -> str:
    text = open(DOC, encoding="utf-8").read()
    assert BEGIN in text and END in text, "docs/architecture.md lost its envelope table markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_architecture_doc_has_the_generated_table():
    """Add a field or an envelope and this fails until the doc is regenerated:
    python -m cluster.envelopes, pasted between the markers."""
    assert doc_table() == envelopes.markdown_table()


def test_a_new_field_would_show_in_the_table():
    assert "| `dlv` |" in envelopes.markdown_table()
    assert "users, conv, seq, record" in envelopes.markdown_table()


def test_every_kind_is_named_once_with_roles_and_a_purpose():
    kinds = [cls.KIND for cls in envelopes.ENVELOPES]
    assert len(kinds) == len(set(kinds))
    for cls in envelopes.ENVELOPES:
        assert cls.SENDER and cls.RECEIVER and cls.__doc__ and "\n" not in cls.__doc__


def test_pack_then_decode_gives_the_record_back():
    env = Dlv(["bob"], "d:alice:bob", 3, b"\x81\xa1t\xa3msg")
    raw = unpackb(envelopes.pack(env))
    assert raw[0] == "dlv" and envelopes.decode(Dlv, raw) == env


def test_defaults_fill_in_and_extra_fields_are_ignored():
    assert envelopes.decode(Join, ["join", "gate1", 7, "alice", "r:lobby"]).members == 0
    assert envelopes.decode(Rep, ["rep", 7, b"x", 12, "from a newer peer"]) == Rep(7, b"x", 12)


def test_too_few_fields_is_malformed():
    with pytest.raises(Malformed):
        envelopes.decode(Join, ["join", "gate1"])


def test_no_role_indexes_an_envelope_by_position():
    pattern = re.compile(r"\benv\[")
    for role in ROLE_DIRS:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, role)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    assert not pattern.search(open(path, encoding="utf-8").read()), path


@pytest.mark.parametrize("fields", [1, 14, 15, 16, 300, 70000])
def test_with_rid_adds_the_key_to_any_map_size(fields):
    from cluster.codec import packb
    body = packb({f"k{i}": i for i in range(fields)})
    assert unpackb(with_rid(body, 42)) == {**unpackb(body), "rid": 42}


def test_with_rid_none_leaves_the_body_alone():
    assert with_rid(OK, None) is OK


def test_refused_and_error_build_the_same_body():
    exc = Refused("muted", "you are muted", until=5)
    assert unpackb(exc.body()) == {"t": "error", "code": "muted", "reason": "you are muted", "until": 5}
    assert exc.body() == error("muted", "you are muted", until=5)
