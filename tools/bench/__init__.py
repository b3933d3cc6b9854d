"""The benchmark suite W1-W4; run ``python -m tools.bench --help``."""
