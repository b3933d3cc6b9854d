"""python -m dc --node NAME -c config.yaml"""
import cluster  # noqa: F401  (gevent monkey-patching first)
from cluster.node import main
from dc.node import DcNode

if __name__ == "__main__":
    main("dc", DcNode)
