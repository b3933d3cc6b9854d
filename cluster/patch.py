"""gevent's monkey patch of the standard library, applied once per process.

It must run before anything imports socket, ssl or threading (redis-py in particular), so
``cluster`` and every role package (gate, login, center, zone, dc, log) call
``ensure_patched()`` first thing in their ``__init__``: whichever is imported first patches.
"""
from gevent import monkey


def ensure_patched() -> None:
    """Patch the standard library for gevent; a no-op when it already is."""
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
