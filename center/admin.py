"""The admin endpoint: JSON over HTTP on center's ``admin_port`` (loopback by default).

Every request carries ``Authorization: Bearer <cluster.secret>`` (compared in constant
time). Operators (``zonechat admin``) and game backends use the same small API:

=======================  =============================================  ==================
POST path                JSON body                                      answer
=======================  =============================================  ==================
``/v1/broadcast``        ``{text}`` or ``{body}``                       ``{conv, seq, ts}``
``/v1/post``             ``{conv, body, cid?}`` as ``system``           ``{conv, seq, ts}``
``/v1/kick``             ``{user}``                                     ``{kicked: bool}``
``/v1/mute``             ``{user, seconds}`` (0 unmutes)                ``{until}``
``/v1/ban``              ``{user, reason}`` (empty reason unbans)       ``{banned: bool}``
``/v1/room``             ``{room, slow?, dups?}`` (seconds, 0 = off; an omitted one stays)  ``{room, slow, dups}``
``/v1/token``            ``{user}``                                     ``{token, expires}``
``/v1/users``            ``{users: [name, ...]}`` token-only accounts    ``{created, existing}``
``/v1/group``            ``{group, owner, members}`` (a roster)         ``{group, members}``
``/v1/reload``           ``{}``: zones re-read moderation.word_filter     ``{reloaded}``
``/v1/stats`` (GET)      -                                              counters
``/v1/ops`` (GET)        -                                              the operator view's data
=======================  =============================================  ==================

Every action is written to the log role as an ``admin`` audit record and kept among the
last actions of the operator view. ``GET /ops`` (and its ``/ops.js``, ``/ops.css``) is
the operator view's page: it holds no data, so it is served without the secret
(``center/ops.py``).
"""
from __future__ import annotations

import hmac
import json
import time
import uuid

from gevent.pywsgi import WSGIServer

from cluster import convs, tokens
from cluster.codec import packb

MAX_BODY = 256 * 1024
MAX_USERS_PER_CALL = 5000


class AdminError(Exception):
    def __init__(self, status: int, code: str, reason: str):
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


def need_user(args: dict, key: str = "user") -> str:
    user = args.get(key)
    if not convs.valid_user(user):
        raise AdminError(400, "bad_request", f"'{key}' must be a user name")
    return user


class AdminApi:
    def __init__(self, center):
        self.center = center
        self.secret = center.config.cluster.secret.encode()
        self.routes = {
            "/v1/broadcast": self.broadcast, "/v1/post": self.post, "/v1/kick": self.kick,
            "/v1/mute": self.mute, "/v1/ban": self.ban, "/v1/room": self.room,
            "/v1/token": self.token, "/v1/group": self.group, "/v1/stats": self.stats,
            "/v1/reload": self.reload, "/v1/users": self.users, "/v1/ops": self.ops,
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
        data = json.dumps(payload).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def handle(self, environ) -> dict:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(auth.encode(), b"Bearer " + self.secret):
            raise AdminError(401, "unauthorized", "send Authorization: Bearer <cluster.secret>")
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            raise AdminError(404, "not_found", "no such admin endpoint")
        args = self.read_json(environ) if environ["REQUEST_METHOD"] == "POST" else {}
        result = route(args)
        if route not in (self.stats, self.ops):
            action = environ["PATH_INFO"].rsplit("/", 1)[-1]
            self.center.bus.record("admin", action, args)
            self.center.ops.action(action, args)
        return result

    def read_json(self, environ) -> dict:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            raise AdminError(413, "too_large", f"request body over {MAX_BODY} bytes")
        try:
            args = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError:
            raise AdminError(400, "bad_request", "the body must be JSON") from None
        if not isinstance(args, dict):
            raise AdminError(400, "bad_request", "the body must be a JSON object")
        return args

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
        cid = args.get("cid") or f"sys-{uuid.uuid4().hex}"
        ack = self.center.post(conv, str(cid), packb(body))
        if ack.get("t") != "ack":
            raise AdminError(503 if ack.get("code") == "unavailable" else 400,
                             ack.get("code", "unavailable"), ack.get("reason", "not stored"))
        return {"conv": conv, "seq": ack["seq"], "ts": ack["ts"], "cid": cid}

    def kick(self, args) -> dict:
        return {"kicked": self.center.kick_user(need_user(args), "admin")}

    def mute(self, args) -> dict:
        user, seconds = need_user(args), args.get("seconds", 600)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise AdminError(400, "bad_request", "'seconds' must be a number >= 0")
        until = int((time.time() + seconds) * 1000) if seconds else 0
        self.center.moderation.set_mute(user, until)
        self.center.tell_zones("mute", user, until)
        return {"user": user, "until": until}

    def ban(self, args) -> dict:
        user, reason = need_user(args), args.get("reason", "banned by an operator")
        if not self.center.moderation.set_ban(user, reason or None):
            raise AdminError(404, "no_such_user", f"no user named {user}")
        if reason:
            self.center.kick_user(user, "banned")
        return {"user": user, "banned": bool(reason)}

    def room(self, args) -> dict:
        room = args.get("room")
        if not isinstance(room, str) or not room.startswith("r:") or not convs.valid(room):
            raise AdminError(400, "bad_request", "'room' must be a room id (r:<name>)")
        current = self.center.moderation.room_modes().get(room, (0.0, 0.0))
        slow, dups = args.get("slow", current[0]), args.get("dups", current[1])
        if not all(isinstance(v, (int, float)) and v >= 0 for v in (slow, dups)):
            raise AdminError(400, "bad_request", "'slow' and 'dups' are seconds >= 0")
        self.center.moderation.set_room_mode(room, float(slow), float(dups))
        self.center.tell_zones("room", room, [float(slow), float(dups)])
        return {"room": room, "slow": slow, "dups": dups}

    def token(self, args) -> dict:
        user = need_user(args)
        if not self.center.store.existing_users([user]):
            raise AdminError(404, "no_such_user", f"no user named {user}")
        ttl = self.center.config.login.token_ttl
        token, expires = tokens.mint(self.center.config.cluster.secret, user, ttl)
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

    def reload(self, _args) -> dict:
        """Zones re-read moderation.word_filter from their config file."""
        self.center.tell_zones("reload", "", None)
        return {"reloaded": len(self.center.zones)}

    def stats(self, _args) -> dict:
        return self.center.snapshot()

    def ops(self, _args) -> dict:
        return self.center.ops.snapshot()
