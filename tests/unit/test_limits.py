"""Gate limits and zone moderation rules (pure logic)."""
import pytest

import cluster  # noqa: F401
from cluster.codec import packb, unpackb
from gate.session import TokenBucket, WindowCounter
from cluster.replies import Refused
from zone.moderation import WordFilter


def test_token_bucket_allows_burst_then_rate():
    bucket = TokenBucket(rate=20, burst=40)
    now = bucket.stamp
    assert sum(bucket.take(now) for _ in range(100)) == 40
    assert sum(bucket.take(now + 1.0) for _ in range(100)) == 20
    assert bucket.take(now + 1.0) is False
    assert sum(bucket.take(now + 100.0) for _ in range(100)) == 40   # never more than burst


def test_window_counter_forgets_old_events():
    w = WindowCounter(60)
    for t in range(10):
        w.add(now=float(t))
    assert w.count(now=10.0) == 10
    assert w.count(now=65.5) == 4


def test_word_filter_masks_text_and_leaves_other_bodies():
    f = WordFilter([r"bad\w*", "ugly"], "mask")
    assert unpackb(f.apply(packb("so BADword and ugly"))) == "so ******* and ****"
    raw = packb({"text": "bad"})
    assert f.apply(raw) is raw
    raw = packb("fine")
    assert f.apply(raw) is raw


def test_word_filter_refuses_when_configured():
    f = WordFilter(["bad"], "refuse")
    with pytest.raises(Refused) as exc:
        f.apply(packb("bad"))
    assert exc.value.code == "filtered"


def test_empty_word_filter_is_free():
    raw = packb("anything")
    assert WordFilter([], "mask").apply(raw) is raw
