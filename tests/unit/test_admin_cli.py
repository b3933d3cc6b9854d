"""cluster.admin's human side: readable times and spans, bare names, and JSON or sentences."""
import datetime
import json

import click
import pytest
from click.testing import CliRunner

from cluster import admin

NOW = datetime.datetime(2026, 12, 2, 21, 20, 5, tzinfo=datetime.timezone.utc).timestamp()


def ms(seconds_from_now: float) -> int:
    return int((NOW + seconds_from_now) * 1000)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.4, "0s"), (45, "45s"), (59.6, "1m"), (60, "1m"), (599.2, "10m"),
    (3599, "1h"), (3600, "1h"), (7500, "2h 5m"), (86399, "1d"), (86400, "1d"),
    (90000, "1d 1h"), (200000, "2d 8h"), (-200, "3m"),
])
def test_span_is_two_units_at_most_rounded_to_the_smaller(seconds, text):
    assert admin.span(seconds) == text


def test_moment_is_a_utc_date_and_how_far_it_is():
    assert admin.moment(ms(600), now=NOW) == "2026-12-02 21:30:05 UTC (in 10m)"
    assert admin.moment(ms(600) - 300, now=NOW) == "2026-12-02 21:30:04 UTC (in 10m)"   # not "9m 59s"
    assert admin.moment(ms(86400), now=NOW) == "2026-12-03 21:20:05 UTC (in 1d)"
    assert admin.moment(ms(-180), now=NOW) == "2026-12-02 21:17:05 UTC (3m ago)"


def test_clock_is_the_utc_time_of_day():
    assert admin.clock(ms(0)) == "21:20:05 UTC"
    assert admin.clock(1_700_000_000_123) == "22:13:20 UTC"


@pytest.mark.parametrize("name, kind, conv", [
    ("lobby", "r", "r:lobby"), ("r:lobby", "r", "r:lobby"), ("team", "g", "g:team"),
    ("g:team", "g", "g:team"), ("g:team", "r", "g:team"), ("d:alice:bob", "r", "d:alice:bob"),
    ("sys", "r", "sys"), ("sys2", "r", "r:sys2"), ("x.y-z_1", "g", "g:x.y-z_1"),
])
def test_conv_id_takes_ids_as_they_are_and_bare_names_as_kind(name, kind, conv):
    assert admin.conv_id(name, kind) == conv


def test_a_bare_conversation_is_a_room_by_default():
    assert admin.conv_id("lobby") == "r:lobby"


def test_flat_lines_are_sorted_with_dotted_nested_keys():
    stats = {"online": 3, "counters": {"sent": 9, "acked": 8}, "node": "center1", "empty": {}}
    assert admin.flat_lines(stats) == ["counters.acked 8", "counters.sent 9", "empty {}",
                                       "node center1", "online 3"]


def test_seconds_or_off():
    assert [admin.seconds_or_off(v) for v in (0, 0.0, 10.0, 2.5)] == ["off", "off", "10s", "2.5s"]


def test_posted_names_the_conversation_seq_and_time():
    result = {"conv": "sys", "seq": 12, "ts": ms(0), "cid": "sys-1"}
    assert admin.posted(result) == "sent to sys: seq 12 at 21:20:05 UTC"


@pytest.fixture
def answer():
    """A command that shows a fixed result through admin.show, as every admin command does."""
    @click.command()
    @admin.output_option
    def cmd(as_json):
        admin.show({"user": "alice", "until": ms(600)}, as_json,
                   lambda r: [f"{r['user']} muted", "second line"])
    return lambda *args: CliRunner().invoke(cmd, list(args))


def test_show_prints_json_when_stdout_is_no_terminal(answer):
    out = answer()                              # CliRunner's stdout is no tty, like a pipe
    assert out.exit_code == 0 and json.loads(out.output) == {"user": "alice", "until": ms(600)}
    assert json.loads(answer("--json").output)["user"] == "alice"


def test_show_prints_sentences_with_human(answer):
    assert answer("--human").output == "alice muted\nsecond line\n"


def test_parse_duration_still_reads_units():
    assert [admin.parse_duration(t) for t in ("90", "90s", "10m", "2h", "1d")] == [90, 90, 600, 7200, 86400]
    with pytest.raises(click.BadParameter):
        admin.parse_duration("soon")
