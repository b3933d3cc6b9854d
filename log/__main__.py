"""``python -m log --node log1 -c config.yaml``"""
import cluster  # noqa: F401  (gevent monkey-patch first)
from cluster.node import main
from log.node import LogNode

if __name__ == "__main__":
    main("log", LogNode)
