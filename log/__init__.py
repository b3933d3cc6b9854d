"""The log role: the append-only traffic and audit log (see ``log.node`` and
``cluster.logfile`` for the file format). ``cluster`` is imported first so gevent patches
the standard library before anything else loads."""
import cluster  # noqa: F401
