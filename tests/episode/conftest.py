"""A fresh episode per test, from the session's runtime (tests/conftest.py)."""

from __future__ import annotations

import pytest

from hpcgym.episode import Episode


@pytest.fixture
def episode(runtime):
    with Episode(runtime) as ep:
        yield ep
