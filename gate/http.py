"""HTTP on the gate's ``ws_port``: the chat page at ``/`` and the WebSocket upgrade at ``/ws``.

Each TCP connection carries one HTTP request (answered with ``Connection: close``) or
becomes a WebSocket (``gate.ws``). The static files are read once at start and served
from memory with a strict Content-Security-Policy; h11 parses and writes the HTTP. The
page's ``connect-src`` is ``'self'`` plus the other gates' WebSocket addresses as
``kicked{moving}`` names them (``gate.drain.gate_addresses``, ws:// and wss://): a page
moved by a drain connects there (whose Origin allow-list must let it in, below).

Origin allow-list (cross-site WebSocket hijacking): the gate's own origins
``http://127.0.0.1:<ws_port>`` and ``http://localhost:<ws_port>`` (and
``http://<host>:<ws_port>`` when the gate binds one named address), plus
``gate.ws_origins``. An upgrade whose ``Origin`` is not on it gets 403. An upgrade with
no ``Origin`` at all is let in: browsers always send one, so only non-browser clients
(game clients, bots) omit it, and they carry no victim's cookies or ambient authority.

Every connection to ``ws_port`` counts against ``gate.max_connections_per_ip`` (with the
TCP ones) while it is open. One past it still has its request read (for at most
``REFUSE_WAIT``): a WebSocket is answered ``error{too_many_connections}`` and a close
frame 1008, so a browser client can tell why; a page request gets 503.
"""
from __future__ import annotations

import os
import time

import h11
from gevent.server import StreamServer

from cluster import pages
from gate import ws
from gate.drain import gate_addresses
from gate.limits import address

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
    "/errors.js": ("errors.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/zonechat.js": ("zonechat.js", "text/javascript; charset=utf-8"),   # copy of clients/js/zonechat.js
}
WS_PATH = "/ws"
HEAD_MAX = 16384                  # request line + headers
HEADERS = [(k.lower().encode(), v.encode()) for k, v in pages.SECURITY_HEADERS]
ANY_ADDRESS = ("", "0.0.0.0", "::", "127.0.0.1", "localhost")
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
           503: b"Service Unavailable"}
REFUSE_WAIT = 2.0                 # seconds a refused connection gets to send its request


def load_static(directory: str = STATIC_DIR) -> dict:
    """path -> (bytes, content type) for every page file that exists."""
    return pages.load_pages(directory, PAGES)


def page_headers(config, me: str) -> list:
    """HEADERS for the page files of gate ``me``: its Content-Security-Policy's connect-src
    also allows the other gates' WebSocket addresses, where a moving kick sends the page. An
    IPv6 address is left out: a CSP host cannot be one (the page falls back to its own)."""
    targets = [g["ws"] for g in gate_addresses(config, me) if "ws" in g and not g["ws"].startswith("[")]
    sources = " ".join(f"{scheme}://{addr}" for addr in targets for scheme in ("ws", "wss"))
    if not sources:
        return HEADERS
    return [(k, v.replace(b"connect-src 'self'", b"connect-src 'self' " + sources.encode()))
            if k == b"content-security-policy" else (k, v) for k, v in HEADERS]


def allowed_origins(spec, extra) -> frozenset:
    port = spec.ws_port
    own = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    if spec.host not in ANY_ADDRESS:
        host = f"[{spec.host}]" if ":" in spec.host else spec.host
        own.append(f"http://{host}:{port}")
    return frozenset(normal_origin(o) for o in [*own, *extra])


def normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_checker(allowed: frozenset):
    def origin_ok(origin: bytes | None) -> bool:
        if origin is None:
            return True
        return normal_origin(origin.decode("latin-1")) in allowed
    return origin_ok


def read_head(sock, timeout: float) -> bytes | None:
    """Bytes up to the end of the request head; None on timeout, EOF or an oversize head."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or len(buf) > HEAD_MAX:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def parse_head(raw: bytes):
    """(h11 connection, Request or None) for a request head."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_MAX)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return conn, None
    return conn, event if isinstance(event, h11.Request) else None


def respond(sock, conn, status: int, body: bytes, ctype: str, head_only: bool = False,
            extra=(), security=HEADERS) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *security, *extra]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers,
                                      reason=REASONS.get(status, b"")))
        if not head_only and body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        sock.sendall(data)
    except (OSError, h11.LocalProtocolError):
        pass


class WebServer:
    """The gate's HTTP + WebSocket listener; sessions live in the gate like TCP ones."""

    def __init__(self, gate, spawn):
        self.gate = gate
        self.files = load_static()
        self.page_headers = page_headers(gate.config, gate.name)
        self.origin_ok = origin_checker(allowed_origins(gate.spec, gate.conf.ws_origins))
        addr = (gate.spec.host, gate.spec.ws_port)
        self.server = StreamServer(addr, self.handle, spawn=spawn, backlog=4096)

    def start(self) -> str:
        self.server.start()
        host, port = self.server.address[:2]
        self.gate.log.info("gate %s serves http and ws on %s:%s", self.gate.name, host, port)
        return f"{host}:{port}"

    def close(self) -> None:
        """Stop accepting (a drain or a stop; idempotent): new connections are refused, open
        sessions stay until the drain or the shutdown kicks them, like TCP ones."""
        if not self.server.closed:
            self.server.close()

    def handle(self, sock, peer) -> None:
        addr, counts = address(peer), self.gate.conns_per_ip
        if not counts.admit(addr):
            self.refuse(sock)
            return
        try:
            self.serve(sock, peer)
        finally:
            counts.release(addr)

    def serve(self, sock, peer) -> None:
        connected = time.monotonic()    # a WebSocket's login deadline runs from here
        raw = read_head(sock, self.gate.conf.login_timeout)
        if raw is None:
            return
        conn, request = parse_head(raw)
        if request is None:
            respond(sock, conn, 400, b"bad request\n", "text/plain; charset=utf-8")
            return
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        if path == WS_PATH:
            ws.serve(self.gate, sock, peer, raw, self.origin_ok, connected)
            return
        self.serve_file(sock, conn, request, path)

    def refuse(self, sock) -> None:
        """A connection past ``gate.max_connections_per_ip``: told why, then closed."""
        self.gate.stats["refused_per_ip"] += 1
        raw = read_head(sock, min(REFUSE_WAIT, self.gate.conf.login_timeout))
        if raw is None:
            return
        conn, request = parse_head(raw)
        if request is not None and request.target.split(b"?", 1)[0] == WS_PATH.encode():
            ws.refuse(sock, raw, self.origin_ok, "too_many_connections",
                      "too many connections from your address")
            return
        respond(sock, conn, 503, b"too many connections from your address\n",
                "text/plain; charset=utf-8")

    def serve_file(self, sock, conn, request, path: str) -> None:
        if request.method not in (b"GET", b"HEAD"):
            respond(sock, conn, 405, b"method not allowed\n", "text/plain; charset=utf-8",
                    extra=[(b"allow", b"GET, HEAD")])
            return
        found = self.files.get(path)
        if found is None:
            respond(sock, conn, 404, b"not found\n", "text/plain; charset=utf-8",
                    head_only=request.method == b"HEAD")
            return
        body, ctype = found
        respond(sock, conn, 200, body, ctype, head_only=request.method == b"HEAD",
                security=self.page_headers)
