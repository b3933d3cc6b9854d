"""zonechat center role."""
from cluster.patch import ensure_patched

ensure_patched()       # gevent patches the standard library before anything else loads
