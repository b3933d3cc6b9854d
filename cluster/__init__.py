"""zonechat's shared core: config, codec, bus, node lifecycle, supervisor and CLI.

gevent must patch the standard library before anything else imports socket, ssl or
threading (redis-py in particular), so the patch runs here, first (``cluster.patch``);
every role package's ``__init__`` applies it too, so no import order is relied on.
"""
from cluster.patch import ensure_patched

ensure_patched()
