"""The terminal chat's issue-15 features (pure logic, and the session against a stub client):
edits and recalls shown on their target, unread badges, read ticks, typing, friends' presence
and status, and the commands' parsing.
"""
import io
import time

import pytest

import cluster  # noqa: F401
from client.connection import ClientError
from client.terminal import ChatSession
from client.terminal_format import (COMMANDS, FRIENDS_MAX, ConvLog, Friends, ReadMarks, Throttle,
                                    apply_event, conv_badge, digest_line, dm_peer, format_msg,
                                    parse_edit, parse_seq, parse_status, plain, presence_text,
                                    read_line, typing_line)
from client.terminal_io import PlainUI

NOW = 1_800_000_000_000
DM = "d:alice:bob"


def at(ts):
    return time.strftime("%H:%M", time.localtime(ts / 1000))


def msg(seq, sender="bob", body="x", conv=DM, **extra):
    return {"t": "msg", "conv": conv, "seq": seq, "from": sender, "ts": NOW, "cid": f"c{seq}", "body": body,
            **extra}


def edit(seq, ref, body, sender="bob", ts=NOW + 60_000, conv=DM):
    return {"t": "msg", "conv": conv, "seq": seq, "from": sender, "ts": ts, "cid": f"e{seq}", "body": body,
            "kind": "edit", "ref": ref}


def recall(seq, ref, sender="bob", conv=DM):
    return {"t": "msg", "conv": conv, "seq": seq, "from": sender, "ts": NOW + 1, "cid": f"r{seq}", "body": None,
            "kind": "recall", "ref": ref}


# -- formatting --------------------------------------------------------------------------
def test_an_edited_message_shows_its_new_body_marked_and_a_recalled_one_is_removed():
    line = plain(format_msg(msg(12, body="new", edited=NOW + 5), "alice", DM))
    assert line == f"{at(NOW)} bob: new (edited)"
    gone = format_msg(msg(12, body=None, recalled=True), "alice", DM)
    assert plain(gone) == f"{at(NOW)} bob: message removed"
    assert ("class:note", "message removed") in gone
    assert plain(format_msg(msg(3, body="plain"), "alice", DM)) == f"{at(NOW)} bob: plain"   # no marks
    assert plain(format_msg(msg(3, conv="sys", sender="system", body=None, recalled=True), "a", "sys")) == \
        f"{at(NOW)} [broadcast] system: message removed"


def test_read_ticks_and_message_numbers_are_only_there_when_asked_for():
    mine = msg(7, sender="alice", body="hi")
    assert plain(format_msg(mine, "alice", DM, read=True)) == f"{at(NOW)} alice: hi ✓✓"
    assert plain(format_msg(mine, "alice", DM, ids=True)) == f"{at(NOW)} #7 alice: hi"
    assert plain(format_msg(mine, "alice", None, ids=True, read=True)) == f"{at(NOW)} #7 [@bob] alice: hi ✓✓"


def test_badges_and_the_small_lines():
    assert conv_badge(DM, "alice", 3) == "@bob (3 unread)"
    assert conv_badge(DM, "alice", 0) == conv_badge(DM, "alice", None) == conv_badge(DM, "alice", "3") == "@bob"
    assert conv_badge("g:team", "alice", 1) == "g:team (1 unread)"
    assert typing_line("bob") == "bob is typing…" and read_line("bob", 12) == "bob read up to #12"
    assert presence_text("online", "afk") == "online: afk" and presence_text("offline", "afk") == "offline"
    assert presence_text("busy") == "unknown"
    assert digest_line({"conv": "r:lobby", "from_seq": 6, "to_seq": 12, "count": 7}, "alice") == \
        "r:lobby: 7 new messages (#6-#12)"
    assert dm_peer(DM, "alice") == "bob" and dm_peer(DM, "bob") == "alice"
    assert dm_peer(DM, "carol") is dm_peer("g:team", "alice") is dm_peer(None, "alice") is None


# -- edits and recalls on the remembered messages ----------------------------------------
def test_an_edit_replaces_the_body_once_and_an_older_edit_never_wins():
    rec = msg(5, body="old")
    assert apply_event(rec, edit(9, 5, "new")) and (rec["body"], rec["edited"]) == ("new", NOW + 60_000)
    assert not apply_event(rec, edit(9, 5, "new"))                       # a replay: nothing to show
    assert not apply_event(rec, edit(8, 5, "older", ts=NOW + 30_000))    # history is newer already
    assert apply_event(rec, edit(10, 5, "newer", ts=NOW + 90_000)) and rec["body"] == "newer"


def test_a_recall_removes_the_message_for_good():
    rec = msg(5, body="oops")
    assert apply_event(rec, recall(6, 5)) and rec["recalled"] is True and rec["body"] is None
    assert not apply_event(rec, recall(6, 5)) and not apply_event(rec, edit(7, 5, "back"))
    assert rec["body"] is None


def test_history_records_that_carry_the_current_state_are_not_changed_by_their_events():
    rec = msg(5, body="final", edited=NOW + 60_000)                      # sync / replay: current state
    assert not apply_event(rec, edit(6, 5, "final"))
    assert not apply_event(msg(5, body=None, recalled=True), recall(6, 5))


def test_the_log_applies_events_to_their_target_and_makes_up_unknown_ones():
    log = ConvLog()
    log.add(msg(1, sender="alice", body="a"))
    log.add(edit(2, 1, "not kept"))                                      # events are not messages
    assert log.get(DM, 2) is None
    rec, changed = log.apply(edit(3, 1, "A", sender="alice"))
    assert changed and rec["body"] == "A" and rec["seq"] == 1 and log.get(DM, 1)["body"] == "A"
    rec["body"] = "mutating the copy"
    assert log.get(DM, 1)["body"] == "A"
    rec, changed = log.apply(recall(4, 40, sender="system"))             # an operator's recall of the unknown
    assert changed and (rec["from"], rec["seq"], rec["recalled"]) == ("system", 40, True)
    assert log.apply({"conv": DM, "kind": "edit", "ref": "x"}) == (None, False)


def test_the_log_knows_own_messages_and_stays_bounded():
    log = ConvLog(per_conv=3, convs_max=2)
    for seq, who in ((1, "alice"), (2, "bob"), (3, "alice"), (4, "alice")):
        log.add(msg(seq, sender=who))
    assert log.get(DM, 1) is None and log.own(DM, "alice") == [3, 4]
    assert log.own(DM, "alice", after=3, upto=10) == [4] and log.last_own(DM, "alice") == 4
    log.apply(recall(5, 4, sender="alice"))
    assert log.last_own(DM, "alice") == 3                                # removed: not "last" any more
    log.add(msg(1, conv="g:a"))
    log.add(msg(1, conv="g:b"))
    assert set(log.convs) == {"g:a", "g:b"} and log.last_own(DM, "alice") is None


def test_read_marks_only_move_forward():
    marks = ReadMarks()
    assert marks.move(DM, 5) == 0 and marks.read(DM, 5) and not marks.read(DM, 6)
    assert marks.move(DM, 4) is None and marks.move(DM, True) is None and marks.move(DM, "9") is None
    assert marks.move(DM, 9) == 5 and not marks.read("d:alice:carol", 1) and not marks.read(DM, None)


def test_a_throttle_lets_one_through_per_period_and_key():
    th = Throttle(3.0, keys_max=2)
    assert th.due("a", 100.0) and not th.due("a", 102.9) and th.due("a", 103.0)
    assert th.due("b", 103.0)
    th.reset("b")
    assert th.due("b", 103.5)
    assert th.due("c", 110.0) and set(th.last) == {"c"}                  # old keys pruned when full


# -- friends -----------------------------------------------------------------------------
def test_friends_keep_their_order_and_a_limit():
    f = Friends(limit=2)
    assert f.add("bob") and not f.add("bob") and f.add("carol") and f.names == ["bob", "carol"]
    with pytest.raises(ValueError):
        f.add("dave")
    assert f.remove("bob") and not f.remove("bob") and f.names == ["carol"]
    assert Friends().limit == FRIENDS_MAX == 200


def test_presence_lines_say_what_changed_and_only_for_friends():
    f = Friends()
    f.add("bob")
    assert f.update("bob", "online") == "bob is online"
    assert f.update("bob", "online") is None
    assert f.update("bob", "online", "afk") == "bob's status: afk"
    assert f.update("bob", "online") == "bob cleared the status text"
    assert f.update("bob", "offline", "afk") == "bob is offline"          # no text while offline
    assert f.update("carol", "online") is None and f.update("bob", "away") is None
    assert f.update("bob", "online", "back\x1b[2J") == "bob is online: back\ufffd[2J"


def test_an_answer_updates_every_friend_and_the_listing_shows_them():
    f = Friends()
    assert f.listing() == ["no friends yet: /friends add USER"]
    for name in ("bob", "carol", "dave"):
        f.add(name)
    lines = f.take_answer({"t": "presence", "users": {"bob": "online", "carol": "offline"},
                           "texts": {"bob": "afk"}})
    assert lines == ["bob is online: afk", "carol is offline"]            # dave: not in the answer
    assert f.take_answer({"users": {"bob": "online", "carol": "online"}, "texts": {"bob": "afk"}}) == \
        ["carol is online"]
    assert f.listing() == ["friends: 2 of 3 online", "  bob online: afk", "  carol online", "  dave unknown"]
    assert f.take_answer({"users": "junk"}) == []


# -- parsing -------------------------------------------------------------------------------
def test_edit_and_recall_arguments():
    assert parse_seq("12", None, "u") == parse_seq("#12", None, "u") == 12 and parse_seq("last", 7, "u") == 7
    for bad in ("", "x", "0", "-1", "1.5", "#"):
        with pytest.raises(ValueError, match="^u$"):
            parse_seq(bad, 7, "u")
    with pytest.raises(ValueError, match="no message of yours"):
        parse_seq("last", None, "u")
    assert parse_edit("12 hello  there ", None) == (12, "hello  there")
    assert parse_edit("last fixed", 4) == (4, "fixed")
    for bad in ("12", "12  ", "x hi", ""):
        with pytest.raises(ValueError, match="usage: /edit"):
            parse_edit(bad, 4)


def test_status_text_is_at_most_64_bytes():
    assert parse_status("é" * 32) == "é" * 32 and parse_status("") == ""
    with pytest.raises(ValueError, match="64 bytes"):
        parse_status("é" * 32 + "x")


# -- the session, with a stub client -------------------------------------------------------
class StubClient:
    def __init__(self):
        self.calls, self.rooms, self.connected, self.welcome = [], set(), True, None
        self.online, self.texts, self.history, self.fail = {}, {}, {}, {}
        self.seq = 20

    def _ack(self, conv):
        self.seq += 1
        return {"t": "ack", "conv": conv, "cid": f"k{self.seq}", "seq": self.seq, "ts": NOW + 120_000}

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise ClientError.from_reply(self.fail[name])

    def send(self, conv, body):
        self._call("send", conv, body)
        return self._ack(conv)

    def edit(self, conv, seq, body):
        self._call("edit", conv, seq, body)
        return self._ack(conv)

    def recall(self, conv, seq):
        self._call("recall", conv, seq)
        return self._ack(conv)

    def presence_sub(self, users):
        self._call("presence_sub", list(users))
        return {"t": "presence", "users": {u: self.online.get(u, "offline") for u in users},
                "texts": {u: self.texts[u] for u in users if u in self.texts}}

    def set_status(self, text=None, hidden=None):
        self._call("set_status", text, hidden)
        return {"t": "ok"}

    def typing(self, conv):
        self._call("typing", conv)

    def sync(self, conv, after, limit=None):
        h = self.history.get(conv, {"msgs": []})
        msgs = [m for m in h["msgs"] if m["seq"] > after][:limit]
        return {"t": "history", "conv": conv, "msgs": msgs, "last_seq": max([m["seq"] for m in h["msgs"]] or [0]),
                "read": h.get("read")}


def session(welcome=None):
    out = io.StringIO()
    s = ChatSession("alice", PlainUI(out))
    s.client = StubClient()
    s.start(welcome or {"convs": {}})
    out.seek(0)
    out.truncate()
    s.current = DM
    return s, out


def lines(out):
    return out.getvalue().splitlines()


def test_the_login_lists_unread_counts():
    out = io.StringIO()
    s = ChatSession("alice", PlainUI(out))
    s.start({"convs": {DM: 9, "g:team": 4, "d:alice:carol": 2, "sys": 1},
             "unread": {DM: 3, "g:team": 0, "d:alice:carol": 1}, "read": {DM: 6}})
    assert lines(out)[1] == "* your conversations: @bob (3 unread) @carol (1 unread) g:team"


def test_a_live_edit_or_recall_shows_the_target_again_and_nothing_else():
    s, out = session()
    s.on_push(msg(5, body="helo"))
    s.on_push(edit(6, 5, "hello"))
    s.on_push(edit(6, 5, "hello"))                  # the same again: nothing
    s.on_push(recall(7, 5))
    s.on_push(edit(8, 3, "earlier one"))             # a target never shown: made up from the event
    assert lines(out) == [f"{at(NOW)} bob: helo", f"{at(NOW)} bob: hello (edited)",
                          f"{at(NOW)} bob: message removed", f"{at(NOW + 60_000)} bob: earlier one (edited)"]


def test_replayed_targets_in_their_current_state_are_not_shown_twice():
    s, out = session()
    s.on_push(msg(5, body="fixed", edited=NOW + 60_000))
    s.on_push(msg(6, body=None, recalled=True))
    s.on_push(edit(7, 5, "fixed"))
    s.on_push(recall(8, 6))
    assert lines(out) == [f"{at(NOW)} bob: fixed (edited)", f"{at(NOW)} bob: message removed"]


def test_history_shows_current_state_with_ticks_and_its_events_print_nothing():
    s, out = session()
    s.client.history[DM] = {"msgs": [msg(1, sender="alice", body="one"), msg(2, sender="alice", body="two!",
                                                                             edited=NOW + 9),
                                     msg(3, body="reply"), edit(4, 2, "two!", sender="alice"),
                                     msg(5, sender="alice", body="unseen")],
                            "read": {"bob": 3, "alice": 5}}
    s.handle("/sync")
    assert lines(out) == [f"{at(NOW)} alice: one ✓✓", f"{at(NOW)} alice: two! (edited) ✓✓",
                          f"{at(NOW)} bob: reply", f"{at(NOW)} alice: unseen"]


def test_edit_and_recall_commands_ask_the_server_and_show_the_target_changed():
    s, out = session()
    s.send_text("helo")                              # acked as seq 21
    s.handle("/edit last hello")
    s.handle("/edit #21 hello again")
    s.handle("/recall 21")
    s.handle("/recall last")                         # nothing of ours left here
    s.handle("/edit 21")
    stamp = at(NOW + 120_000)
    assert s.client.calls == [("send", DM, "helo"), ("edit", DM, 21, "hello"), ("edit", DM, 21, "hello again"),
                              ("recall", DM, 21)]
    assert lines(out) == [f"{stamp} alice: helo", f"{stamp} alice: hello (edited)",
                          f"{stamp} alice: hello again (edited)", f"{stamp} alice: message removed",
                          "! no message of yours here yet (give its number: /ids shows them)",
                          "! usage: /edit SEQ TEXT (SEQ: a number, or last)"]


def test_an_edit_refused_by_the_server_prints_its_reason_and_changes_nothing():
    s, out = session()
    s.on_push(msg(5, body="bob's"))
    s.client.fail["edit"] = {"t": "error", "code": "not_sender", "reason": ""}
    s.handle("/edit 5 mine now")
    assert lines(out)[1:] == ["! that is someone else's message"] and s.log.get(DM, 5)["body"] == "bob's"
    s.current = None
    s.handle("/recall 5")
    assert lines(out)[-1] == "! no conversation yet: /dm USER or /join r:ROOM"


def test_ids_toggle_numbers_in_front_of_messages():
    s, out = session()
    s.handle("/ids")
    s.on_push(msg(5, body="hi"))
    s.handle("/ids off")
    s.on_push(msg(6, body="yo"))
    s.handle("/ids maybe")
    assert lines(out) == ["* message numbers shown (#SEQ, for /edit and /recall)", f"{at(NOW)} #5 bob: hi",
                          "* message numbers hidden", f"{at(NOW)} bob: yo", "! usage: /ids [on|off]"]


def test_a_read_push_prints_once_it_covers_own_messages():
    s, out = session()
    s.on_push(msg(4, body="hi"))
    s.on_push({"t": "read", "conv": DM, "user": "bob", "seq": 4})          # nothing of ours yet
    s.send_text("hello")                                                  # seq 21
    s.on_push({"t": "read", "conv": DM, "user": "bob", "seq": 20})
    s.on_push({"t": "read", "conv": DM, "user": "bob", "seq": 21})
    s.on_push({"t": "read", "conv": DM, "user": "bob", "seq": 21})
    s.on_push({"t": "read", "conv": DM, "user": "alice", "seq": 30})      # our own cursor
    s.on_push({"t": "read", "conv": "g:team", "user": "bob", "seq": 30})  # groups: no ticks
    assert lines(out)[2:] == ["* bob read up to #21"]
    assert s.render(s.log.get(DM, 21))[-1] == ("class:read", " ✓✓")


def test_typing_shows_for_the_current_conversation_and_not_again_right_away():
    s, out = session()
    s.on_push({"t": "typing", "conv": DM, "user": "bob"})
    s.on_push({"t": "typing", "conv": DM, "user": "bob"})                # quiet period
    s.on_push({"t": "typing", "conv": "g:team", "user": "carol"})        # elsewhere
    s.on_push(msg(5, body="done"))                                       # a message re-arms it
    s.on_push({"t": "typing", "conv": DM, "user": "bob"})
    assert lines(out) == ["* bob is typing…", f"{at(NOW)} bob: done", "* bob is typing…"]


def test_typing_is_sent_at_most_every_few_seconds_and_only_where_allowed(monkeypatch):
    spawned = []
    monkeypatch.setattr("client.terminal.gevent.spawn", lambda fn, *args: spawned.append(args) or fn(*args))
    s, _out = session()
    s.typing_started()
    s.typing_started()
    s.current = "sys"
    s.typing_started()
    s.current = "r:lobby"                                                # not joined
    s.typing_started()
    s.client.rooms.add("r:lobby")
    s.typing_started()
    s.client.connected = False
    s.current = "g:team"
    s.typing_started()
    assert s.client.calls == [("typing", DM), ("typing", "r:lobby")]


def test_friends_commands_watch_the_whole_list():
    s, out = session()
    s.client.online, s.client.texts = {"bob": "online"}, {"bob": "afk"}
    s.handle("/friends add bob")
    s.handle("/friends add carol")
    s.handle("/friends add bob")
    s.handle("/friends")
    s.handle("/friends remove bob")
    s.handle("/friends remove zed")
    s.handle("/friends add alice")
    s.handle("/friends hug bob")
    assert s.client.calls == [("presence_sub", ["bob"]), ("presence_sub", ["bob", "carol"]),
                              ("presence_sub", ["carol"])]
    assert lines(out) == ["* bob added to your friends", "* bob is online: afk",
                          "* carol added to your friends", "* carol is offline",
                          "! bob is on your friends list already",
                          "* friends: 1 of 2 online", "*   bob online: afk", "*   carol offline",
                          "* bob removed from your friends", "! zed is not on your friends list",
                          "! usage: /friends add USER (another user)",
                          "! usage: /friends [add USER | remove USER]"]


def test_a_refused_presence_sub_leaves_the_list_as_it_was():
    s, out = session()
    s.client.fail["presence_sub"] = {"t": "error", "code": "rate_limited", "reason": "slow down"}
    s.handle("/friends add bob")
    assert s.friends.names == [] and lines(out) == ["! slow down"]


def test_presence_pushes_and_a_fresh_answer_print_what_changed():
    s, out = session()
    s.handle("/friends add bob")                     # offline
    s.on_push({"t": "presence", "user": "bob", "status": "online"})
    s.on_push({"t": "presence", "user": "bob", "status": "online", "text": "lunch"})
    s.on_push({"t": "presence", "user": "carol", "status": "online"})   # no friend
    s.on_push({"t": "presence", "rid": 9, "users": {"bob": "offline"}, "texts": {}})   # after a reconnect
    assert lines(out)[2:] == ["* bob is online", "* bob's status: lunch", "* bob is offline"]


def test_status_and_hiding():
    s, out = session()
    s.handle("/status out for lunch")
    s.handle("/status")
    s.handle("/status " + "x" * 65)
    s.handle("/hide")
    s.handle("/unhide")
    assert s.client.calls == [("set_status", "out for lunch", None), ("set_status", "", None),
                              ("set_status", None, True), ("set_status", None, False)]
    assert lines(out) == ["* status set: out for lunch", "* status cleared",
                          "! status text too long: at most 64 bytes",
                          "* hidden: you appear offline to everyone (/unhide to show up again)",
                          "* visible again: your friends see you online"]


def test_a_digest_prints_a_summary_and_help_lists_every_new_command():
    s, out = session()
    s.on_push({"t": "digest", "conv": "r:lobby", "from_seq": 6, "to_seq": 6, "count": 1, "recent": []})
    s.handle("/help")
    assert lines(out)[0] == "* r:lobby: 1 new message (#6-#6)"
    for command in ("/edit", "/recall", "/ids", "/friends", "/status", "/hide"):
        assert command in COMMANDS and any(line.startswith(f"* {command}") for line in lines(out)), command
    assert "/unhide" in out.getvalue()
