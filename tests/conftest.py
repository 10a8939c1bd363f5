"""Shared test helpers: paths to the fixture data copied from shared/reference (see
tests/fixtures/ORIGIN.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def hamnet_fixtures() -> Path:
    return FIXTURES / "hamnet"
