"""Shared fixtures. Server URLs come from the environment that `make test` sets up
(COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL, COUPONCORE_TEST_POSTGRES_ADMIN_URL,
COUPONCORE_TEST_KEY_PREFIX); tests that need servers fail, never skip, when they are missing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import couponcore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "couponcore.db")


@pytest.fixture
def engine(db_path: str) -> Iterator[couponcore.Engine]:
    e = couponcore.open(db_path)
    yield e
    e.close()


@pytest.fixture
def python() -> str:
    return sys.executable


def env_url(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the servers")
    return value
