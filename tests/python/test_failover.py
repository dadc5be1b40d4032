"""Replica-acknowledged grants (replicas_acked / replica_wait_ms): the options' checks, a server
without replicas (nothing is answered ISSUED, and a retry is not a second coupon), and, on a
PRIVATE Redis Cluster started for this module (never the shared one), a manual CLUSTER FAILOVER
and a kill -9 of the campaign's master mid-sale: every ISSUED answer is a row in PostgreSQL,
no seq is answered twice, nothing past the quantity. The harness is bench/failover_loss.py's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import couponcore
import pytest
import redis as redispy
from conftest import env_url, production_kwargs, run_worker_to_drain

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from failover_loss import PrivateCluster, PrivateSentinel, SaleResult, run_sale  # noqa: E402

needs_servers = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None, reason="redis-server is not installed"
)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"replicas_acked": -1}, couponcore.InvalidArgument, "replicas_acked must be 0..16"),
        ({"replicas_acked": 17}, couponcore.InvalidArgument, "replicas_acked must be 0..16"),
        ({"replicas_acked": "1"}, couponcore.InvalidType, "replicas_acked"),
        ({"replicas_acked": 1, "replica_wait_ms": 0}, couponcore.InvalidArgument, "replica_wait_ms must be 1..60000"),
        ({"replicas_acked": 1, "replica_wait_ms": 1.5}, couponcore.InvalidType, "replica_wait_ms"),
        (
            {"replicas_acked": 1, "replica_wait_ms": 5000, "redis_command_timeout_ms": 5000},
            couponcore.InvalidArgument,
            "below redis_command_timeout_ms",
        ),
    ],
)
def test_replica_options_are_checked(options: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        couponcore.open(**production_kwargs(), **options)  # type: ignore[arg-type]


def test_without_replicas_nothing_is_issued_and_a_retry_is_not_a_second_coupon() -> None:
    kw = production_kwargs()
    with couponcore.open(**kw, replicas_acked=1, replica_wait_ms=20, close_drain_timeout_ms=100) as e:
        c = e.campaigns.create("no-replicas", quantity=10)
        for _ in range(3):
            with pytest.raises(couponcore.Unavailable, match="not yet replicated"):
                e.issue(c.id, "alice", "r1")
        with pytest.raises(couponcore.Unavailable, match="not yet replicated"):
            e.issue_many(c.id, ["bob", "carol"])  # no request ids: not re-sent, answered at once
        r = redispy.Redis.from_url(env_url("COUPONCORE_TEST_REDIS_URL"))
        issued = int(r.hget(f"{kw['key_prefix']}{{c{c.id}}}:m", "n") or 0)
        # alice's three tries are one grant (the remembered answer), bob and carol one each.
        assert issued == 3
        assert e.stats(c.id).rows == 0  # the writer holds them back too (no replica has them)


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(node_timeout_ms=1000)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@needs_servers
# In this order: a kill leaves its master rebuilt (the dead node restarted as its replica).
# "stall-kill": the replica stopped for 0.5 s (a lagging replica), then its master killed — the
# case where, without the option, acknowledged grants are lost (bench/failover_loss.py).
@pytest.mark.parametrize("mode", ["failover", "kill", "stall-kill"])
def test_failover_mid_sale_loses_no_acknowledged_grant(private_cluster: PrivateCluster, mode: str) -> None:
    kw = production_kwargs()
    res = run_sale(
        private_cluster,
        kw["postgres"],
        kw["key_prefix"],
        mode=mode,
        acked=True,
        quantity=20_000 if mode == "stall-kill" else 1000,
        threads=6,
        replica_wait_ms=100,
        pace_s=0.01 if mode == "failover" else 0.0,
        batch=100 if mode == "stall-kill" else 1,
    )
    print(res.row())
    check_sale(res)


@needs_servers
def test_sharded_campaign_failover_mid_sale_loses_no_acknowledged_grant(private_cluster: PrivateCluster) -> None:
    """A 3-shard campaign (a shard per master) with a master killed late in the sale, when shards
    run dry and stock moves between masters: the moves' WAITs keep every ISSUED answer a row and
    no seq twice."""
    kw = production_kwargs()
    res = run_sale(
        private_cluster,
        kw["postgres"],
        kw["key_prefix"],
        mode="kill",
        acked=True,
        quantity=1500,
        threads=6,
        replica_wait_ms=100,
        fault_at=0.8,
        shards=3,
    )
    print(res.row())
    check_sale(res)


def check_sale(res: SaleResult) -> None:
    # The fault came mid-sale: coupons were issued before it and after the promotion.
    assert 0 < res.issued_before and res.issued_at_promotion < res.quantity
    assert res.drained
    assert res.unknown == 0  # the clients found the new master within their budget
    assert res.lost == 0, f"{res.lost} ISSUED answers without their row"
    assert res.dup_seqs == 0 and res.over == 0
    assert res.acks == res.quantity == res.rows  # sold out, every coupon answered once and stored once


@pytest.fixture
def private_sentinel() -> Iterator[PrivateSentinel]:
    s = PrivateSentinel(down_after_ms=1000)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@needs_servers
@pytest.mark.parametrize("mode", ["kill", "failover"])
def test_sentinel_failover_mid_sale_loses_no_acknowledged_grant(private_sentinel: PrivateSentinel, mode: str) -> None:
    """redis+sentinel://: the primary killed (or SENTINEL FAILOVER) mid-sale; the engine finds the
    promoted replica through the sentinel (a demoted primary's READONLY makes it ask again)."""
    kw = production_kwargs()
    res = run_sale(
        private_sentinel,
        kw["postgres"],
        kw["key_prefix"],
        mode=mode,
        acked=True,
        quantity=1000,
        threads=6,
        replica_wait_ms=100,
        pace_s=0.01 if mode == "failover" else 0.0,
    )
    print(res.row())
    check_sale(res)


@pytest.mark.parametrize(
    "url, match",
    [
        ("redis+sentinel://127.0.0.1:26379", "master's name is missing"),
        ("redis+sentinel://127.0.0.1:26379/", "master's name is missing"),
        ("redis+sentinel://127.0.0.1/mymaster", "needs a port"),
        ("redis+sentinel://127.0.0.1:26379,/mymaster", "empty sentinel"),
        ("redis+sentinel://redis://127.0.0.1:26379/mymaster", "mixes"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "database number"),
    ],
)
def test_bad_sentinel_urls_are_invalid(url: str, match: str) -> None:
    kw = production_kwargs()
    kw["redis"] = url
    with pytest.raises(couponcore.InvalidArgument, match=match):
        couponcore.open(**kw)


def test_no_sentinel_answers_is_unavailable() -> None:
    from failover_loss import free_ports

    kw = production_kwargs()
    kw["redis"] = f"redis+sentinel://127.0.0.1:{free_ports(1)[0]}/nobody"
    with pytest.raises(couponcore.Unavailable, match="no sentinel gave the address of master 'nobody'"):
        couponcore.open(**kw)


CLUSTER = os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER", "")


@pytest.mark.skipif(not CLUSTER, reason="COUPONCORE_TEST_REDIS_CLUSTER is not set")
def test_standalone_worker_waits_for_replicas() -> None:
    """`couponcore worker --replicas-acked 1` on the shared test cluster (every master has a
    replica): it writes every grant; a bad value is refused before it starts."""
    kw = production_kwargs()
    kw["redis"] = CLUSTER
    cmd = [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"]]
    bad = subprocess.run(cmd + ["--replicas-acked", "17"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "replicas_acked must be 0..16" in bad.stderr
    with couponcore.open(**kw, writer_threads=0, replicas_acked=1) as e:
        c = e.campaigns.create("worker-acked", quantity=300)
        assert all(r.issued for r in e.issue_many(c.id, [f"w{i}" for i in range(300)]))
        final = run_worker_to_drain(e, kw, c.id, 300, "--replicas-acked", "1", "--replica-wait-ms", "200")
        assert final["replica_waits"] > 0 and final["replica_wait_shortfalls"] == 0  # every master has a replica
