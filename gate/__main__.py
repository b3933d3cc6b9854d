"""python -m gate --node NAME -c config.yaml"""
import cluster  # noqa: F401  (gevent monkey-patching first)
from cluster.node import main
from gate.node import GateNode

if __name__ == "__main__":
    main("gate", GateNode)
