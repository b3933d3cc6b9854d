"""The log role: the append-only traffic and audit log (see ``log.node`` and
``log.logfile`` for the file format). gevent patches the standard library first,
before anything else loads."""
from cluster.patch import ensure_patched

ensure_patched()
