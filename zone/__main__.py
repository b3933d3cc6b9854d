"""python -m zone --node NAME -c config.yaml"""
import cluster  # noqa: F401  (gevent monkey-patching first)
from cluster.node import main
from zone.node import ZoneNode

if __name__ == "__main__":
    main("zone", ZoneNode)
