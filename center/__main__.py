"""python -m center --node NAME -c config.yaml"""
import cluster  # noqa: F401  (gevent monkey-patching first)
from cluster.node import main
from center.node import CenterNode

if __name__ == "__main__":
    main("center", CenterNode)
