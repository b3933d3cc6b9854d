"""zonechat's shared core: config, codec, bus, node lifecycle, supervisor and CLI.

gevent must patch the standard library before anything else imports socket, ssl or
threading (redis-py in particular), so the patch runs here, first: every role and tool
imports ``cluster`` before anything else.
"""
from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()
