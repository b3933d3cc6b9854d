"""Presence for friends lists: who watches whom, users' status, and the pushes.

Center already knows who is online (``CenterNode.presence``: user -> (gate, sid)). Here:
each session's ``presence_sub`` list (``watching``: user -> (sid, targets), replaced by
the next one, dropped when the session ends), the reverse index (``watchers``: target ->
users), and the status of online users (text, hidden; kept with the account in Redis and
brought by the login's ``bind``). A login or logout of a watched user, or a change of its
status, is pushed as ``presence{user, status, text?}`` to its watchers' sessions, one
``notify`` per gate. A hidden user is "offline" to everyone.

Like presence, this state is soft: after a center restart the gates send every session's
list and status again (``watches``), so subscriptions and pushes go on.
Bounded: at most ``chat.presence_max`` targets per online user.
"""
from __future__ import annotations

import gevent

from cluster.codec import packb
from cluster.envelopes import Notify, Rep
from cluster.replies import OK, error
from dc.store import StoreUnavailable


class Watchers:
    def __init__(self, center):
        self.center = center
        self.watching: dict = {}        # user -> (sid, frozenset of targets)
        self.watchers: dict = {}        # target -> set of users watching it
        self.status: dict = {}          # online user -> (text, hidden)

    # -- what a target looks like -----------------------------------------------------------
    def visible(self, user: str) -> bool:
        return user in self.center.presence and not self.status.get(user, ("", False))[1]

    def state_of(self, user: str) -> str:
        return "online" if self.visible(user) else "offline"

    def answer(self, targets) -> dict:
        users = {t: self.state_of(t) for t in targets}
        texts = {t: self.text_of(t) for t in targets if users[t] == "online" and self.text_of(t)}
        return {"t": "presence", "users": users, "texts": texts}

    def text_of(self, user: str) -> str:
        """An online user's status text ("" when none, or not told since a center restart)."""
        return self.status.get(user, ("", False))[0]

    # -- subscriptions ----------------------------------------------------------------------
    def watch(self, user: str, sid: int, targets) -> None:
        self.unwatch(user)
        targets = frozenset(targets)
        if targets:
            self.watching[user] = (sid, targets)
            for t in targets:
                self.watchers.setdefault(t, set()).add(user)

    def unwatch(self, user: str) -> None:
        _sid, old = self.watching.pop(user, (None, ()))
        for t in old:
            users = self.watchers.get(t)
            if users is not None:
                users.discard(user)
                if not users:
                    del self.watchers[t]

    def on_watch(self, env) -> None:
        """presence_sub: replace the session's list (unless a newer session of the user
        replaced this one meanwhile), answer the targets' states."""
        if self.center.presence.get(env.user) == (env.gate, env.sid):
            self.watch(env.user, env.sid, env.users)
        self.center.bus.send(env.gate, Rep(env.req, packb(self.answer(env.users))))

    def on_watches(self, env) -> None:
        """After a center restart: a gate's sessions' lists and statuses."""
        for user, sid, targets, text, hidden in env.entries:
            if self.center.presence.get(user) == (env.gate, sid):
                self.status[user] = (text, bool(hidden))
                self.watch(user, sid, targets)

    # -- logins, logouts, status ------------------------------------------------------------
    def came_online(self, user: str, sid: int, status, was_visible: bool) -> None:
        """A bind: the user's session is ``sid`` now (an older session's list goes)."""
        if self.watching.get(user, (sid,))[0] != sid:
            self.unwatch(user)
        text, hidden = status if status else ("", False)
        self.status[user] = (text, bool(hidden))
        if not was_visible and not hidden:
            self.push(user, "online", text)

    def went_offline(self, user: str) -> None:
        """The user's last session ended (presence already forgot it)."""
        text, hidden = self.status.pop(user, ("", False))
        self.unwatch(user)
        if not hidden:
            self.push(user, "offline")

    def on_status(self, env) -> None:
        """set_status: applied and pushed here, in arrival order (two quick ones both
        count); stored with the account from a greenlet (Redis is not waited for in a bus
        handler, and only the fields given are written), answered once stored."""
        old_text, old_hidden = self.status.get(env.user, ("", False))
        text = old_text if env.text is None else env.text
        hidden = old_hidden if env.hidden is None else bool(env.hidden)
        was = self.visible(env.user)
        if env.user in self.center.presence:
            self.status[env.user] = (text, hidden)
        now = self.visible(env.user)
        if was and not now:
            self.push(env.user, "offline")
        elif now and (not was or text != old_text):
            self.push(env.user, "online", text)
        gevent.spawn(self._store_status, env)

    def _store_status(self, env) -> None:
        try:
            self.center.store.set_status(env.user, env.text, env.hidden)
        except StoreUnavailable:
            self.center.bus.send(env.gate, Rep(env.req, error("unavailable", "storage is unavailable; retry",
                                                              retry_ms=1000)))
            return
        self.center.bus.send(env.gate, Rep(env.req, OK))

    def push(self, target: str, state: str, text: str = "") -> None:
        """``presence{user, status, text?}`` to every watcher's session, one notify per gate."""
        users = self.watchers.get(target)
        if not users:
            return
        body = {"t": "presence", "user": target, "status": state}
        if text and state == "online":
            body["text"] = text
        presence, by_gate = self.center.presence, {}
        for u in users:
            where = presence.get(u)
            if where is not None and self.watching.get(u, (None,))[0] == where[1]:
                by_gate.setdefault(where[0], []).append(u)
        packed = packb(body)
        for gate, local in by_gate.items():
            self.center.bus.send(gate, Notify(local, packed, target))
