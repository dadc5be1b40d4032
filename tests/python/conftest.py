"""Shared fixtures. Server URLs come from the environment that `make test` sets up
(COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL, COUPONCORE_TEST_POSTGRES_ADMIN_URL,
COUPONCORE_TEST_KEY_PREFIX); tests that need servers fail, never skip, when they are missing."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import couponcore
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "couponcore.db")


_prefix_counter = itertools.count()


def production_kwargs() -> dict[str, str]:
    """Servers of this test run, and a Redis key prefix no other test uses."""
    base = os.environ.get("COUPONCORE_TEST_KEY_PREFIX", f"cctest:{os.getpid()}:")
    return {
        "redis": env_url("COUPONCORE_TEST_REDIS_URL"),
        "postgres": env_url("COUPONCORE_TEST_POSTGRES_URL"),
        "key_prefix": f"{base}t{os.getpid()}x{next(_prefix_counter)}:",
    }


@pytest.fixture(params=["embedded", "production"])
def open_deployment(request: pytest.FixtureRequest, db_path: str) -> Callable[..., couponcore.Engine]:
    """Opens this test's deployment, as often as the test likes (keyword arguments are passed on to
    couponcore.open): the same SQLite file, or the same servers and Redis key prefix. A test taking
    it (or `engine`) runs on both deployments."""
    where: dict[str, str] = {"path": db_path} if request.param == "embedded" else production_kwargs()
    return lambda **options: couponcore.open(**where, **options)


@pytest.fixture
def engine(open_deployment: Callable[..., couponcore.Engine]) -> Iterator[couponcore.Engine]:
    """The same tests run against both deployments."""
    e = open_deployment()
    yield e
    e.close()


@pytest.fixture
def embedded(db_path: str) -> Iterator[couponcore.Engine]:
    e = couponcore.open(db_path)
    yield e
    e.close()


def stats(engine: couponcore.Engine, campaign_id: int) -> couponcore.CampaignStats:
    """The store's view after every acknowledged grant has landed (drain)."""
    assert engine.drain(60.0), "grants did not reach the store within 60 s"
    return engine.stats(campaign_id)


@pytest.fixture
def python() -> str:
    return sys.executable


def env_url(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the servers")
    return value


def run_worker_to_drain(
    engine: couponcore.Engine, kw: dict[str, str], campaign_id: int, quantity: int, *extra: str
) -> dict[str, object]:
    """Runs `couponcore worker` (with `extra` arguments) against `kw`'s servers while `engine`
    drains: every one of the campaign's `quantity` grants must be in the store, one per user;
    then stops it with SIGTERM and returns its final report (the last JSON line)."""
    cmd = [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"]]
    cmd += ["--key-prefix", kw["key_prefix"], "--report-s", "0", *extra]
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert engine.drain(60.0)
        st = engine.stats(campaign_id)
        assert (st.rows, st.distinct_users, st.max_seq) == (quantity, quantity, quantity)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["grants_written"] == quantity
    return report


def metric_samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value of every sample line of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out
