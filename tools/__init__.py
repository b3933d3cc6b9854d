"""Operator and developer tools: the load test (``tools.load``, behind ``zonechat loadtest``)
and the benchmark suite (``tools.bench``)."""
