"""The admin endpoint: JSON over HTTP on center's ``admin_port`` (loopback by default).

Every request carries ``Authorization: Bearer <secret>``, the cluster secret
(``cluster.secrets.cluster_secret``, compared in constant time). Operators (``zonechat
admin``) and game backends use the same small API:

=======================  =============================================  ==================
POST path                JSON body                                      answer
=======================  =============================================  ==================
``/v1/broadcast``        ``{text}`` or ``{body}``                       ``{conv, seq, ts}``
``/v1/post``             ``{conv, body, cid?}`` as ``system``           ``{conv, seq, ts}``
``/v1/recall``           ``{conv, seq}``: the message is removed for all  ``{conv, seq, ts, ref}``
``/v1/kick``             ``{user}``                                     ``{kicked: bool}``
``/v1/mute``             ``{user, seconds}`` (0 unmutes)                ``{until}``
``/v1/ban``              ``{user, reason}`` (empty reason unbans)       ``{banned: bool}``
``/v1/revoke``           ``{user}``: its tokens stop working            ``{epoch, kicked}``
``/v1/room``             ``{room, slow?, dups?}`` (seconds, 0 = off; an omitted one stays)  ``{room, slow, dups}``
``/v1/token``            ``{user}``                                     ``{token, expires}``
``/v1/users``            ``{users: [name, ...]}`` token-only accounts    ``{created, existing}``
``/v1/group``            ``{group, owner, members}`` (a roster)         ``{group, members}``
``/v1/reload``           ``{}``: zones re-read moderation.word_filter     ``{reloaded}``
``/v1/drain``            ``{node, over?}``: the gate moves its sessions away over ``over`` s (default gate.drain_over), then exits  ``{node, over, sessions, already, retry_ms}``
``/v1/stats`` (GET)      -                                              counters
``/v1/ops`` (GET)        ``?since=T`` (query)                           the operator view's data (history after second T)
=======================  =============================================  ==================

Bodies are strict JSON objects: NaN, Infinity, numbers that overflow to infinity, nesting
deeper than ``MAX_DEPTH``, integers past 64 bits, strings that are no UTF-8 and fields of
the wrong type or range are ``400 {"error": "bad_request", "reason": ...}``. Every answer
is JSON, errors included (an unexpected one is ``500 {"error": "internal"}``, logged).

A ban, an unban and a revoke bump the user's token epoch (``ep`` in ``u:<name>``): every
login token minted before is refused. A ban or unban answers 200 only once every zone
has applied it, so every send a zone takes after the answer is checked against it;
a zone that does not confirm within ``ZONE_WAIT`` makes it ``503 unavailable`` (the ban
is stored and logins are refused already; retrying is safe).

A drain (gate/drain.py) answers once the gate has started it: ``sessions`` is how many it
is moving (``kicked{moving}``) before it exits and its supervisor starts it again;
``already`` says a drain was under way (``sessions`` is then what it has left);
``retry_ms`` is the longest a moved client waits before it reconnects elsewhere. A node
that is no gate of the config is ``400``; a gate that does not answer in time (it is
down or restarting) ``503 unavailable``.

Every action is written to the log role as an ``admin`` audit record and kept among the
last actions of the operator view. ``GET /ops`` and its files (``center/static/``: the
page's scripts and styles, the vendored uPlot charts) are the operator view's page: they
hold no data, so they are served without the secret (``center/ops.py``).
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import time
import urllib.parse
import uuid

import gevent
from gevent.event import AsyncResult
from gevent.pywsgi import WSGIServer

from cluster import convs, secrets, tokens
from cluster.codec import packb
from cluster.convs import SYS
from cluster.envelopes import Mod, Sync
from dc.store import StoreUnavailable

log = logging.getLogger("zonechat.center.admin")

MAX_BODY = 256 * 1024
MAX_USERS_PER_CALL = 5000
MAX_DEPTH = 32               # nesting of a body's arrays and objects
MAX_SECONDS = 10 * 365 * 86400   # a mute, slow mode or duplicate window
MAX_REASON = 200             # characters of a ban reason
MAX_QUERY_ARGS = 8           # query parameters of a GET looked at (the rest are ignored)
MAX_DRAIN = 3600             # seconds a drain may be spread over
ZONE_WAIT = 5.0              # seconds every zone has to confirm a ban
INT64 = 2 ** 63


class AdminError(Exception):
    def __init__(self, status: int, code: str, reason: str):
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


def need_user(args: dict, key: str = "user") -> str:
    user = args.get(key)
    if not convs.valid_user(user):
        raise AdminError(400, "bad_request", f"'{key}' must be a user name")
    return user


def need_seconds(args: dict, key: str, default):
    """``args[key]`` (or ``default``): a number of seconds, 0..MAX_SECONDS (no bool)."""
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS:
        raise AdminError(400, "bad_request", f"'{key}' must be a number of seconds, 0..{MAX_SECONDS}")
    return value


def bad_json(reason: str):
    raise AdminError(400, "bad_request", reason)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        bad_json(f"the number {text[:20]} is out of range")
    return value


def parse_body(raw: bytes) -> dict:
    """A request body: one strict JSON object (see the module docstring), or AdminError."""
    try:
        args = json.loads(raw or b"{}", parse_float=_finite,
                          parse_constant=lambda name: bad_json(f"{name} is not JSON"))
    except RecursionError:
        raise AdminError(400, "bad_request", f"the body is nested deeper than {MAX_DEPTH}") from None
    except ValueError:
        raise AdminError(400, "bad_request", "the body must be JSON (UTF-8)") from None
    if not isinstance(args, dict):
        raise AdminError(400, "bad_request", "the body must be a JSON object")
    check_value(args)
    return args


def query_args(environ) -> dict:
    """A GET's query string as {name: last value} (``/v1/ops?since=...``)."""
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return dict(pairs[:MAX_QUERY_ARGS])


def check_value(value) -> None:
    """Depth at most MAX_DEPTH, integers in 64 bits, strings encodable (no lone surrogates):
    what msgpack and Redis can carry. Iterative: a deep value cannot exhaust the stack."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                bad_json(f"the body is nested deeper than {MAX_DEPTH}")
            children = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for key, child in children:
                if key is not None:
                    todo.append((key, depth))
                todo.append((child, depth + 1))
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                bad_json("a string of the body is not valid UTF-8")
        elif isinstance(item, int) and not isinstance(item, bool) and not -INT64 <= item < INT64:
            bad_json("an integer of the body does not fit in 64 bits")


class AdminApi:
    def __init__(self, center):
        self.center = center
        secret = secrets.cluster_secret(center.config)
        self.secret = secret.encode()
        self.token_key = secrets.token_key(secret)
        self.routes = {
            "/v1/broadcast": self.broadcast, "/v1/post": self.post, "/v1/recall": self.recall,
            "/v1/kick": self.kick,
            "/v1/mute": self.mute, "/v1/ban": self.ban, "/v1/revoke": self.revoke, "/v1/room": self.room,
            "/v1/token": self.token, "/v1/group": self.group, "/v1/stats": self.stats,
            "/v1/reload": self.reload, "/v1/users": self.users, "/v1/ops": self.ops,
            "/v1/drain": self.drain,
        }
        self.server = None

    def start(self, host: str, port: int) -> None:
        self.server = WSGIServer((host, port), self.app, log=None, error_log=None)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1)

    # -- WSGI -----------------------------------------------------------------------------
    def app(self, environ, start_response):
        page = self.center.ops.page(environ, start_response)
        if page is not None:
            return page
        try:
            status, payload = 200, self.handle(environ)
        except AdminError as exc:
            status, payload = exc.status, {"error": exc.code, "reason": exc.reason}
        except StoreUnavailable as exc:
            log.warning("admin %s: store unavailable: %s", environ.get("PATH_INFO"), exc)
            status, payload = 503, {"error": "unavailable", "reason": "storage is unavailable; retry"}
        except Exception:
            log.exception("admin %s failed", environ.get("PATH_INFO"))
            status, payload = 500, {"error": "internal", "reason": "the request failed; see center's log"}
        data = json.dumps(payload).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def handle(self, environ) -> dict:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(auth.encode(), b"Bearer " + self.secret):
            raise AdminError(401, "unauthorized", "send Authorization: Bearer <the cluster secret>")
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            raise AdminError(404, "not_found", "no such admin endpoint")
        args = self.read_json(environ) if environ["REQUEST_METHOD"] == "POST" else query_args(environ)
        result = route(args)
        if route not in (self.stats, self.ops):
            action = environ["PATH_INFO"].rsplit("/", 1)[-1]
            self.center.bus.record("admin", action, args)
            self.center.ops.action(action, args)
        return result

    def read_json(self, environ) -> dict:
        text = environ.get("CONTENT_LENGTH") or "0"
        if not text.isascii() or not text.isdigit():
            raise AdminError(400, "bad_request", "Content-Length must be a number of bytes")
        length = int(text)
        if length > MAX_BODY:
            raise AdminError(413, "too_large", f"request body over {MAX_BODY} bytes")
        return parse_body(environ["wsgi.input"].read(length))

    # -- actions --------------------------------------------------------------------------
    def broadcast(self, args) -> dict:
        body = args.get("body", args.get("text"))
        if body is None:
            raise AdminError(400, "bad_request", "'text' is missing")
        return self.post({"conv": "sys", "body": body, "cid": args.get("cid")})

    def post(self, args) -> dict:
        conv, body = args.get("conv"), args.get("body")
        if not convs.valid(conv) or body is None:
            raise AdminError(400, "bad_request", "'conv' must be a conversation id and 'body' set")
        cid = args.get("cid")
        if cid is not None and (isinstance(cid, bool) or not isinstance(cid, (str, int))):
            raise AdminError(400, "bad_request", "'cid' must be a string")
        cid = cid or f"sys-{uuid.uuid4().hex}"
        ack = self.center.post(conv, str(cid), packb(body))
        if ack.get("t") != "ack":
            raise AdminError(503 if ack.get("code") == "unavailable" else 400,
                             ack.get("code", "unavailable"), ack.get("reason", "not stored"))
        return {"conv": conv, "seq": ack["seq"], "ts": ack["ts"], "cid": cid}

    def recall(self, args) -> dict:
        """An operator's recall of any message, at any time: a ``recall`` event from
        ``system`` (zone/events.py); 404 when there is no such message to recall."""
        conv, seq = args.get("conv"), args.get("seq")
        if not convs.valid(conv) or isinstance(seq, bool) \
                or not isinstance(seq, int) or seq < 1:
            raise AdminError(400, "bad_request", "'conv' must be a conversation id and 'seq' a seq (1 or more)")
        cid = f"recall-{uuid.uuid4().hex}"
        ack = self.center.post(conv, cid, packb(None), "recall", seq)
        if ack.get("t") != "ack":
            code = ack.get("code", "unavailable")
            status = {"unavailable": 503, "not_found": 404}.get(code, 400)
            raise AdminError(status, code, ack.get("reason", "not recalled"))
        return {"conv": conv, "seq": ack["seq"], "ts": ack["ts"], "ref": seq}

    def kick(self, args) -> dict:
        return {"kicked": self.center.kick_user(need_user(args), "admin")}

    def mute(self, args) -> dict:
        user, seconds = need_user(args), need_seconds(args, "seconds", 600)
        until = int((time.time() + seconds) * 1000) if seconds else 0
        self.center.moderation.set_mute(user, until)
        self.center.tell_zones("mute", user, until)
        return {"user": user, "until": until}

    def ban(self, args) -> dict:
        """Stored, tokens revoked, every zone told (and confirming), then the kick."""
        user, reason = need_user(args), args.get("reason", "banned by an operator")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise AdminError(400, "bad_request", f"'reason' must be a string of at most {MAX_REASON} characters")
        if not self.center.moderation.set_ban(user, reason or None):
            raise AdminError(404, "no_such_user", f"no user named {user}")
        self.center.store.bump_epoch(user)
        late = self.zones_apply("ban", user, reason)
        if reason:
            self.center.kick_user(user, "banned")
        if late:
            raise AdminError(503, "unavailable", f"{', '.join(late)} did not confirm within {ZONE_WAIT:g} s; "
                             "the ban is stored and logins are refused; retry")
        return {"user": user, "banned": bool(reason)}

    def revoke(self, args) -> dict:
        """Every login token of ``user`` stops working; its session (if any) is kicked."""
        user = need_user(args)
        epoch = self.center.store.bump_epoch(user)
        if epoch is None:
            raise AdminError(404, "no_such_user", f"no user named {user}")
        return {"user": user, "epoch": epoch, "kicked": self.center.kick_user(user, "admin")}

    def zones_apply(self, what: str, key: str, value) -> list[str]:
        """Tell every zone a moderation change and wait until each has applied it; the
        zones that did not confirm within ZONE_WAIT. A zone applies a ``mod`` as it reads
        it and answers a ``sync`` (of ``sys``, no messages) in its next tick; both go out in
        one bus batch to that zone (same peer, same loop tick: together or not at all), so
        the answer to the sync comes after the change is in."""
        center, waits = self.center, []
        try:
            for zone in center.zones:
                req = next(center._reqs)
                waits.append((zone, req, center.waiting.setdefault(req, AsyncResult())))
                center.bus.send(zone, Mod(what, key, value))
                center.bus.send(zone, Sync(center.name, req, "system", SYS, 0, 0))
            gevent.wait([result for _, _, result in waits], timeout=ZONE_WAIT)
            return [zone for zone, _, result in waits if not result.ready()]
        finally:
            for _, req, _ in waits:
                center.waiting.pop(req, None)

    def room(self, args) -> dict:
        room = args.get("room")
        if not isinstance(room, str) or not room.startswith("r:") or not convs.valid(room):
            raise AdminError(400, "bad_request", "'room' must be a room id (r:<name>)")
        current = self.center.moderation.room_modes().get(room, (0.0, 0.0))
        slow, dups = need_seconds(args, "slow", current[0]), need_seconds(args, "dups", current[1])
        self.center.moderation.set_room_mode(room, float(slow), float(dups))
        self.center.tell_zones("room", room, [float(slow), float(dups)])
        return {"room": room, "slow": slow, "dups": dups}

    def token(self, args) -> dict:
        user = need_user(args)
        record = self.center.store.get_user(user)
        if record is None:
            raise AdminError(404, "no_such_user", f"no user named {user}")
        ttl = self.center.config.login.token_ttl
        token, expires = tokens.mint(self.token_key, user, tokens.epoch_of(record), ttl)
        return {"user": user, "token": token, "expires": expires}

    def group(self, args) -> dict:
        group, owner, members = args.get("group"), need_user(args, "owner"), args.get("members")
        if not isinstance(group, str) or not group.startswith("g:") or not convs.valid(group):
            raise AdminError(400, "bad_request", "'group' must be a group id (g:<name>)")
        if not isinstance(members, list) or not all(convs.valid_user(m) for m in members):
            raise AdminError(400, "bad_request", "'members' must be a list of user names")
        answer = self.center.group_roster(group, owner, members)
        if answer.get("t") != "ok":
            raise AdminError(400, answer.get("code", "unavailable"), answer.get("reason", ""))
        return {"group": group, "owner": owner, "members": members}

    def users(self, args) -> dict:
        """Create token-only accounts (players a game backend authenticates itself)."""
        names = args.get("users")
        if not isinstance(names, list) or not 0 < len(names) <= MAX_USERS_PER_CALL:
            raise AdminError(400, "bad_request", f"'users' must be a list of 1..{MAX_USERS_PER_CALL} names")
        bad = [n for n in names if not convs.valid_user(n) or n == "system"]
        if bad:
            raise AdminError(400, "bad_name", f"not a valid user name: {bad[0]!r}")
        created = self.center.store.create_token_users(names)
        return {"created": created, "existing": len(names) - created}

    def drain(self, args) -> dict:
        """A gate stops accepting and moves its sessions to the others, then exits."""
        node = args.get("node")
        spec = self.center.config.nodes.get(node) if isinstance(node, str) else None
        if spec is None or spec.role != "gate":
            what = "no node of this cluster" if spec is None else f"a {spec.role}, not a gate"
            raise AdminError(400, "bad_request", f"'node' must name a gate ({', '.join(self.center.gates)}): "
                             f"{node!r} is {what}")
        over = args.get("over", self.center.config.gate.drain_over)
        if isinstance(over, bool) or not isinstance(over, (int, float)) or not 0 <= over <= MAX_DRAIN:
            raise AdminError(400, "bad_request", f"'over' must be a number of seconds, 0..{MAX_DRAIN}")
        answer = self.center.drain_gate(node, float(over))
        if answer.get("t") != "ok":
            raise AdminError(503, "unavailable", f"{node} did not answer in time; is it running? "
                             "retrying is safe")
        return {"node": node, "over": over, "sessions": answer.get("sessions", 0),
                "already": bool(answer.get("already")), "retry_ms": answer.get("retry_ms", 0)}

    def reload(self, _args) -> dict:
        """Zones re-read moderation.word_filter from their config file."""
        self.center.tell_zones("reload", "", None)
        return {"reloaded": len(self.center.zones)}

    def stats(self, _args) -> dict:
        return self.center.snapshot()

    def ops(self, args) -> dict:
        since = args.get("since")
        if since is not None and not (since.isascii() and since.isdigit() and len(since) <= 12):
            raise AdminError(400, "bad_request", "since must be a time in whole seconds (the last history t you have)")
        return self.center.ops.snapshot(None if since is None else int(since))
