"""Operator and developer tools: the load generator (locustfile) and the benchmark suite."""
