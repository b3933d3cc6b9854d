"""python -m login --node NAME -c config.yaml"""
import cluster  # noqa: F401  (gevent monkey-patching first)
from cluster.node import main
from login.node import LoginNode

if __name__ == "__main__":
    main("login", LoginNode)
