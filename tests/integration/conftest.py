"""Fixtures of the integration tests; their helpers are in kit.py (``from kit import ...``).

``cluster`` and ``start_cluster`` (a whole cluster per test module) come from
tests/conftest.py; here: ``clients``, a ``kit.Clients`` on the module's ``cluster``, every
client it made closed when the test ends.
"""
from __future__ import annotations

import pytest

from kit import Clients


@pytest.fixture
def clients(cluster):
    box = Clients(cluster)
    yield box
    box.close()
