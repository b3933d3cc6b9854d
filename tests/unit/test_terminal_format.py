"""The terminal chat's formatting (pure logic): message lines, errors, labels, the prompt.

The chat end to end, through a pseudo-terminal against a real cluster, is in
tests/integration/test_terminal_chat.py; over a pipe against a scripted peer in
tests/unit/test_client.py.
"""
import io
import time

import pytest

import cluster  # noqa: F401
from client.connection import ClientError, ConnectionLost, RequestTimeout
from client.terminal import ChatSession
from client.client import RECONNECT_KICKS
from client.terminal_format import (COMMANDS, KICK_TEXT, conv_label, describe_error, error_line,
                                    format_msg, hhmm, plain, prompt_text, span, time_left)
from client.terminal_io import PlainUI

NOW = 1_800_000_000_000                             # ms since the epoch


def local_hhmm(ts_ms):
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


def test_hhmm_is_the_local_time_of_ts_in_ms():
    for ts in (0, NOW, NOW + 59_999, NOW + 3_600_000):
        assert hhmm(ts) == local_hhmm(ts)
    assert hhmm(None) == hhmm("soon") == hhmm(True) == "--:--"


def test_message_line_in_the_current_conversation_has_no_tag_and_no_ids():
    m = {"t": "msg", "conv": "d:alice:bob", "seq": 12, "from": "bob", "ts": NOW, "cid": "c-77", "body": "hi"}
    line = plain(format_msg(m, "alice", "d:alice:bob"))
    assert line == f"{local_hhmm(NOW)} bob: hi"
    assert "12" not in line.replace(local_hhmm(NOW), "") and "c-77" not in line


@pytest.mark.parametrize("conv, me, current, tag", [
    ("d:alice:bob", "alice", None, "[@bob] "),
    ("d:alice:bob", "bob", "r:lobby", "[@alice] "),
    ("r:lobby", "alice", "d:alice:bob", "[r:lobby] "),
    ("g:team", "alice", "r:lobby", "[g:team] "),
    ("d:bob:carol", "alice", None, "[d:bob:carol] "),      # a DM of others (never pushed)
])
def test_elsewhere_the_conversation_is_tagged(conv, me, current, tag):
    line = plain(format_msg({"conv": conv, "from": "bob", "ts": NOW, "body": "yo"}, me, current))
    assert line == f"{local_hhmm(NOW)} {tag}bob: yo"


def test_colours_tell_self_others_system_and_broadcasts_apart():
    def styles(sender, conv="r:lobby"):
        return [s for s, _ in format_msg({"conv": conv, "from": sender, "ts": NOW, "body": "x"}, "alice", "r:lobby")]
    assert "class:self" in styles("alice") and "class:other" in styles("bob")
    assert "class:system" in styles("system")
    broadcast = format_msg({"conv": "sys", "from": "system", "ts": NOW, "body": "restart at 5"}, "alice", "sys")
    assert broadcast == [("class:broadcast", f"{local_hhmm(NOW)} [broadcast] system: restart at 5")]


def test_untrusted_text_cannot_reach_the_terminal_as_escapes():
    m = {"conv": "r:lobby", "from": "bob\x1b[31m", "ts": NOW, "body": "hi\x1b[2J\nthere"}
    line = plain(format_msg(m, "alice", "r:lobby"))
    assert "\x1b" not in line and "\n" not in line and "there" in line
    assert plain(format_msg({"conv": "r:lobby", "from": "bob", "ts": NOW, "body": {"k": [1]}}, "a", "r:lobby")) \
        .endswith("bob: {'k': [1]}")


def test_labels_and_prompt_name_the_conversation():
    assert conv_label("d:alice:bob", "alice") == "@bob" and conv_label("d:alice:bob", "bob") == "@alice"
    assert conv_label("sys", "alice") == "broadcast" and conv_label("g:team", "alice") == "g:team"
    assert prompt_text("r:lobby", "alice") == "[r:lobby] > "
    assert prompt_text("d:alice:bob", "alice") == "[@bob] > "
    assert prompt_text(None, "alice") == "> "


@pytest.mark.parametrize("ms, text", [
    (1, "1 second"), (1000, "1 second"), (1500, "2 seconds"), (59_000, "59 seconds"),
    (60_000, "1 minute"), (540_001, "10 minutes"), (3_600_000, "1 hour"), (47 * 3_600_000, "47 hours"),
    (48 * 3_600_000, "2 days"),
])
def test_spans_round_up_to_a_readable_unit(ms, text):
    assert span(ms) == text


def test_the_server_reason_comes_first_with_the_time_left():
    assert describe_error("muted", "you are muted", until=NOW + 9 * 60_000 - 5, now_ms=NOW) == \
        "! you are muted (muted for 9 more minutes)"
    assert describe_error("muted", "you are muted", until=NOW - 1, now_ms=NOW) == "! you are muted"
    assert describe_error("unavailable", "storage is unavailable; retry later", 1000) == \
        "! storage is unavailable; retry later (retry in 1 second)"
    slow = "slow mode: one message every 30 s in r:lobby"
    assert describe_error("rate_limited", slow) == f"! {slow}"
    assert describe_error("bad_conv", "no user named zed") == "! no user named zed"
    assert time_left("rate_limited", retry_ms=True) == "" and time_left("muted", until="x") == ""


def test_the_canned_text_is_only_a_fallback():
    assert describe_error("muted", "") == "! you are muted here"
    assert describe_error("bad_conv") == "! no such conversation (or no such user)"
    assert describe_error("new_code") == "! new_code"
    assert describe_error("timeout", "no ack for cid abc-1 in d:a:b", ours=True) == \
        "! no answer from the server in time"


def test_error_line_reads_the_reply_and_knows_client_made_errors():
    reply = {"t": "error", "rid": 4, "code": "muted", "reason": "you are muted", "until": NOW + 120_000}
    assert error_line(ClientError.from_reply(reply), now_ms=NOW) == "! you are muted (muted for 2 more minutes)"
    assert error_line(ConnectionLost()) == "! not connected to the server"
    assert error_line(RequestTimeout("no ack for cid x-1 in r:lobby")) == "! no answer from the server in time"
    assert error_line(ClientError("connect_failed", "127.0.0.1:1: refused")) == "! 127.0.0.1:1: refused"


def test_the_session_prints_each_push_once_and_remembers_the_last_dm():
    out = io.StringIO()
    session = ChatSession("alice", PlainUI(out))
    session.start({"convs": {"sys": 0, "d:alice:bob": 3}})
    session.on_push({"t": "msg", "conv": "d:alice:bob", "seq": 4, "from": "bob", "ts": NOW, "body": "hey"})
    session.on_push({"t": "msg", "conv": "d:alice:carol", "seq": 1, "from": "alice", "ts": NOW, "body": "mine"})
    session.on_push({"t": "kicked", "reason": "shutdown"})
    session.on_connection("lost")
    session.on_connection("reconnected")
    assert session.last_dm == "d:alice:bob"            # our own message is no DM received
    assert out.getvalue().splitlines() == [
        "* logged in as alice; /help lists the commands", "* your conversations: @bob",
        f"{local_hhmm(NOW)} [@bob] bob: hey", f"{local_hhmm(NOW)} [@carol] alice: mine",
        "* kicked by the server: the server is restarting",
        "* connection lost, reconnecting…", "* reconnected"]


def test_a_moving_kick_reads_as_a_move_and_every_reconnecting_kick_has_a_sentence():
    out = io.StringIO()
    session = ChatSession("alice", PlainUI(out))
    session.start({"convs": {}})
    session.on_push({"t": "kicked", "reason": "moving", "retry_ms": 300,
                     "gates": [{"tcp": "127.0.0.1:7710", "ws": "127.0.0.1:7711"}]})
    session.on_connection("lost")                   # the Client (reconnect on) moves by itself
    session.on_connection("reconnected")
    assert out.getvalue().splitlines()[1:] == [
        "* kicked by the server: this server is restarting: moving you to another one",
        "* connection lost, reconnecting…", "* reconnected"]
    assert RECONNECT_KICKS <= set(KICK_TEXT)         # shutdown and moving: a sentence, not a code


def test_reply_without_a_dm_and_help_list_the_new_commands():
    out = io.StringIO()
    session = ChatSession("alice", PlainUI(out))
    session.backlog = None
    session.handle("/reply hello")
    session.handle("/help")
    lines = out.getvalue().splitlines()
    assert lines[0] == "! no direct message to reply to yet"
    assert any(line.startswith("* /reply") for line in lines) and any(line.startswith("* /who") for line in lines)
    assert set(COMMANDS) == set(session.commands)    # Tab completes exactly the commands there are
