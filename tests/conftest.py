"""Shared fixtures."""

from __future__ import annotations

import pytest

from helpers import make_small


@pytest.fixture
def small():
    return make_small()
