"""The Python client SDK of zonechat (protocol v1 over TCP, on gevent).

Importable by game backends, bots and tests without the server: it needs only the core
(``cluster.codec`` for framing, ``cluster.convs`` for conversation ids), never a role
package (gate, login, center, zone, dc, log)::

    from client import Client, ClientError, dm_conv
    c = Client("127.0.0.1", 7700, reconnect=True, auto_recv=True).connect()

``client.client`` is the Client (see its docstring for the whole behaviour),
``client.connection`` one TCP connection of it, ``client.tracking`` its bookkeeping
(seqs, unacked sends) and ``client.terminal`` the terminal chat behind ``zonechat chat``.
"""
from client.client import CLIENT_COUNTERS, PROTOCOL_VERSION, Client, connect, dm_conv
from client.connection import ClientError, Connection, ConnectionLost, RequestTimeout
from client.tracking import PendingSend, SendBook, SeqTracker

__all__ = ["CLIENT_COUNTERS", "PROTOCOL_VERSION", "Client", "ClientError", "Connection", "ConnectionLost",
           "PendingSend", "RequestTimeout", "SendBook", "SeqTracker", "connect", "dm_conv"]
