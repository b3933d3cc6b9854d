"""TLS in front of the gates: Debian's HAProxy run with docs/deploy/haproxy.cfg itself.

The template's ports, gate addresses and certificate path are replaced by the module
cluster's and by a self-signed certificate made with ``openssl req -x509`` (argv, no
shell). HAProxy terminates TLS on two free loopback ports: raw TCP (mode tcp, leastconn)
to the gates' ``tcp_port`` and HTTP/WebSocket to their ``ws_port``; the gates speak plain
TCP. A TLS client (Python ssl, trusting only that certificate) registers, logs in and
sends a DM that a plain-TCP user on a gate receives; a ``wss://`` client (websocket-client)
logs in through the WebSocket frontend. The template's health checks must pass on every
gate (read from HAProxy's stats socket). HAProxy is ended by its pid when the module ends.

Without haproxy or openssl the tests skip, saying what to install; under CI (``CI`` set)
they fail instead: .ci/run installs both.
"""
from __future__ import annotations

import csv
import http.client
import json
import os
import socket
import ssl
import subprocess

import pytest
import websocket

from cluster.child import die_with_parent
from cluster.config import GateConf
from cluster.convs import dm
from harness import REPO, free_ports, need_tool, poll_for
from kit import PASSWORD, WAIT, Raw, Users, fresh, register

TEMPLATE = os.path.join(REPO, "docs", "deploy", "haproxy.cfg")
CERT_IN_TEMPLATE = "/etc/haproxy/certs/zonechat.pem"
GATES_IN_TEMPLATE = {"gate1": (7700, 7701), "gate2": (7710, 7711)}   # as in config.yaml
START_TIMEOUT = 30.0
CHECK_TIMEOUT = 60.0          # every server's first health check (inter 5s) has passed
PRIVILEGE_DROP = ("    user haproxy\n", "    group haproxy\n", "    chroot /var/lib/haproxy\n")
STATS_MAX = 1 << 20           # bytes of `show stat` read at most
# The page's public origin, as a browser on https://chat.example/ (port 443) sends it
ORIGIN = "https://chat.example"


def need(tool: str) -> str:
    """The path of ``tool``; a skip (a fail under CI) saying what to install when missing."""
    return need_tool(tool, "haproxy openssl")


@pytest.fixture(scope="module")
def tools() -> dict:
    return {"haproxy": need("haproxy"), "openssl": need("openssl")}


@pytest.fixture(scope="module")
def cluster(start_cluster, tools):
    """The default test cluster, its gates allowing the chat page's public origin
    (gate.ws_origins), as docs/operations.md tells an operator to do."""
    return start_cluster({"gate": {"ws_origins": [ORIGIN]}})


@pytest.fixture(scope="module")
def fronts(cluster) -> dict:
    """The two TLS frontends' ports, chosen once the cluster holds its own."""
    tcp, ws = free_ports(2)
    return {"tcp": tcp, "ws": ws}


@pytest.fixture(scope="module")
def cert(tools, tmp_path_factory) -> dict:
    """A self-signed certificate for localhost: the client's CA file and HAProxy's PEM."""
    directory = tmp_path_factory.mktemp("tls")
    key, crt, pem = (str(directory / name) for name in ("key.pem", "cert.pem", "haproxy.pem"))
    subprocess.run([tools["openssl"], "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", crt], check=True, capture_output=True, timeout=60)
    with open(pem, "wb") as out:
        for part in (crt, key):
            with open(part, "rb") as fh:
                out.write(fh.read())
    os.chmod(pem, 0o600)
    return {"ca": crt, "pem": pem, "dir": str(directory)}


def render(template: str, cluster, fronts: dict, cert: dict, stats_sock: str) -> str:
    """The template with this module's ports, gates and certificate; every replaced
    piece must be in it (a changed template fails here, not in a confusing way later)."""
    subs = {"bind :7443 ": f"bind 127.0.0.1:{fronts['tcp']} ",
            "bind :8443 ": f"bind 127.0.0.1:{fronts['ws']} ",
            CERT_IN_TEMPLATE: cert["pem"],
            # a test needs few connections; 40,000 makes HAProxy want an 80,000-fd limit
            "maxconn 40000": "maxconn 1000",
            "\nglobal\n": f"\nglobal\n    stats socket {stats_sock} mode 600 level operator\n"}
    for name, (tcp, ws) in GATES_IN_TEMPLATE.items():
        subs[f"server {name} 127.0.0.1:{tcp} "] = "server {} {}:{} ".format(name, *cluster.gate_addrs[name])
        subs[f"server {name} 127.0.0.1:{ws} "] = "server {} {}:{} ".format(name, *cluster.ws_addrs[name])
    if os.geteuid() != 0:      # only root can drop to Debian's haproxy user and chroot
        subs.update(dict.fromkeys(PRIVILEGE_DROP, ""))
    for old, new in subs.items():
        assert old in template, f"docs/deploy/haproxy.cfg has no {old!r}: update this test"
        template = template.replace(old, new)
    return template


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stats(stats_sock: str) -> list[dict]:
    """HAProxy's ``show stat`` as dicts (pxname, svname, status, check_status, ...)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(stats_sock)
        sock.sendall(b"show stat\n")
        data = b""
        while len(data) < STATS_MAX and (chunk := sock.recv(65536)):
            data += chunk
    rows = [row for row in csv.reader(data.decode("utf-8", "replace").splitlines()) if row]
    header = [rows[0][0].lstrip("# "), *rows[0][1:]]
    return [dict(zip(header, row)) for row in rows[1:]]


def checked_servers(stats_sock: str) -> dict:
    """(backend, server) -> (status, check_status) of every gate server."""
    return {(r["pxname"], r["svname"]): (r["status"], r["check_status"])
            for r in stats(stats_sock) if r["svname"] not in ("FRONTEND", "BACKEND")}


class Haproxy:
    """``haproxy -f CFG -db`` as our child; its log (stdout and stderr) in a file."""

    def __init__(self, binary: str, cfg_path: str, log_path: str, stats_sock: str):
        self.log_path, self.stats_sock = log_path, stats_sock
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-f", cfg_path, "-db"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent(os.getpid()))

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-4000:]

    def wait_listening(self, ports) -> None:
        poll_for(lambda: self.proc.poll() is not None or all(accepts(p) for p in ports),
                 START_TIMEOUT, f"haproxy listening on {ports}")
        assert self.proc.poll() is None, f"haproxy exited with {self.proc.returncode}:\n{self.log()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def haproxy(tools, cluster, fronts, cert):
    stats_sock = os.path.join(cert["dir"], "haproxy.sock")
    with open(TEMPLATE, encoding="utf-8") as fh:
        text = render(fh.read(), cluster, fronts, cert, stats_sock)
    cfg_path = os.path.join(cert["dir"], "haproxy.cfg")
    with open(cfg_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    proxy = Haproxy(tools["haproxy"], cfg_path, os.path.join(cert["dir"], "haproxy.log"), stats_sock)
    try:
        proxy.wait_listening([fronts["tcp"], fronts["ws"]])
        yield proxy
    finally:
        proxy.stop()


def tls_context(cert: dict) -> ssl.SSLContext:
    """A client context that trusts only the test certificate (and checks the host name)."""
    return ssl.create_default_context(cafile=cert["ca"])


def tls_raw(port: int, context: ssl.SSLContext) -> Raw:
    """A kit.Raw whose socket is TLS to the TCP frontend (nothing is sent before the wrap)."""
    conn = Raw(("127.0.0.1", port))
    try:
        conn.sock = context.wrap_socket(conn.sock, server_hostname="localhost")
    except BaseException:
        conn.close()
        raise
    return conn


def test_health_checks_pass_on_every_gate(haproxy, cluster):
    """The template's checks (the protocol's ping on tcp_port, GET / on ws_port) succeed."""
    want = {(backend, gate) for backend in ("zonechat_gates_tcp", "zonechat_gates_ws")
            for gate in GATES_IN_TEMPLATE}

    def all_ok():
        seen = checked_servers(haproxy.stats_sock)
        return set(seen) == want and all(s == "UP" and c == "L7OK" for s, c in seen.values())
    try:
        poll_for(all_ok, CHECK_TIMEOUT, "every gate's health check L7OK", interval=0.5)
    except AssertionError:
        raise AssertionError(f"not every health check passed within {CHECK_TIMEOUT:g}s: "
                             f"{checked_servers(haproxy.stats_sock)}\n{haproxy.log()}") from None


def test_tls_tcp_client_sends_a_dm_to_a_plain_tcp_user(haproxy, cluster, fronts, cert):
    with Users(cluster) as users:
        bob = users.new("bob", gate=1)                     # plain TCP, straight to gate2
        alice = tls_raw(fronts["tcp"], tls_context(cert))
        users.conns.append(alice)
        assert alice.sock.version() in ("TLSv1.2", "TLSv1.3"), alice.sock.version()
        name = fresh("alice")
        assert alice.register(name) == {"t": "ok", "rid": 1}
        welcome = alice.login(name)
        assert welcome["t"] == "welcome" and welcome["user"] == name, welcome
        conv = dm(name, bob.user)
        ack = alice.send(conv, "hello over TLS", cid="tls-1")
        assert ack["t"] == "ack", ack
        got = bob.msgs(conv, 1)[0]
        assert (got["from"], got["body"], got["cid"]) == (name, "hello over TLS", "tls-1"), got
        assert got["seq"] == ack["seq"], (got, ack)


def test_tls_frontend_is_not_trusted_without_its_certificate(haproxy, fronts):
    """The client really verifies: a context without the test CA refuses the handshake."""
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_raw(fronts["tcp"], ssl.create_default_context())


def wss(fronts: dict, cert: dict, origin: str) -> websocket.WebSocket:
    return websocket.create_connection(
        f"wss://127.0.0.1:{fronts['ws']}/ws", timeout=WAIT, origin=origin,
        sslopt={"ca_certs": cert["ca"], "server_hostname": "localhost"})


def test_wss_client_logs_in_through_the_websocket_frontend(haproxy, cluster, fronts, cert):
    name = register(cluster)
    ws = wss(fronts, cert, ORIGIN)
    try:
        ws.send(json.dumps({"t": "login", "rid": 1, "user": name, "password": PASSWORD, "v": 1}))
        welcome = json.loads(ws.recv())
        assert welcome["t"] == "welcome" and welcome["user"] == name and welcome["rid"] == 1, welcome
    finally:
        ws.close()


def test_wss_keeps_the_origin_check_of_the_gates(haproxy, fronts, cert):
    """HAProxy passes the browser's Origin through: one not in gate.ws_origins gets 403."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        wss(fronts, cert, "https://elsewhere.example")
    assert refused.value.status_code == 403


def test_chat_page_over_https(haproxy, fronts, cert):
    conn = http.client.HTTPSConnection("localhost", fronts["ws"], timeout=WAIT,
                                       context=tls_context(cert))
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert reply.status == 200 and b"<html" in reply.read().lower()
    finally:
        conn.close()


def test_template_timeouts_outlast_the_gates_idle_timeout():
    """HAProxy must not cut a silent client before its gate kicks it with kicked{idle}."""
    with open(TEMPLATE, encoding="utf-8") as fh:
        lines = [line.split() for line in fh if line.strip().startswith("timeout ")]
    found = {words[1]: words[2] for words in lines}
    for name in ("client", "server", "tunnel"):
        assert found.get(name, "").endswith("s"), (name, found)
        assert int(found[name][:-1]) > GateConf().idle_timeout, (name, found[name])
