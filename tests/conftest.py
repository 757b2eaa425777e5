"""Shared test fixtures: where the golden tensors live (copied from ../shared/golden)."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN
