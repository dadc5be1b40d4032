"""Replica acknowledgement beyond the gate's batches (replicas_acked > 0), on a PRIVATE primary and
replica started for this module (never the shared servers): a sharded campaign's stock moves and
reconcile's re-drive wait for the replica; a stopped replica (SIGSTOP) makes them Unavailable and
changes nothing that could be lost, and once it resumes the sale ends exact. The WAIT counters are
exported as metrics. Also: Redis Sentinel with three sentinels (quorum 2) that require a password."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import couponcore
import psycopg
import pytest
from conftest import env_url, production_kwargs
from test_shards import shard_of, shard_tag

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from failover_loss import PrivateSentinel, free_ports, run_sale  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None, reason="redis-server is not installed"
)


@pytest.fixture(scope="module")
def pair() -> Iterator[PrivateSentinel]:
    """A primary and its replica, nothing else writing to them: no sentinel (its hello messages
    are replicated writes) and no replication PING within a test (repl-ping-replica-period), so
    the replication offset moves only with what a test does."""
    s = PrivateSentinel(sentinels=0)
    s.start()
    s.client(s.primary).config_set("repl-ping-replica-period", 3600)
    try:
        yield s
    finally:
        s.stop()


class StoppedReplica:
    """SIGSTOP on the replica: it stops acknowledging; SIGCONT (on exit too) and it catches up."""

    def __init__(self, pair: PrivateSentinel) -> None:
        self.pair = pair
        self.pid = int(Path(pair.dir, f"redis-{pair.replica}.pid").read_text().strip())

    def __enter__(self) -> StoppedReplica:
        # The replica has acknowledged every byte before it stops (read from INFO, not with a
        # WAIT: a WAIT that blocks sends REPLCONF GETACK down the stream, which moves the offset).
        primary = self.pair.client(self.pair.primary)
        deadline = time.monotonic() + 20
        while True:
            info = primary.info("replication")
            if int(info["slave0"]["offset"]) == int(info["master_repl_offset"]):
                break
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.kill(self.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the replica has acknowledged everything again
            p = self.pair.client(self.pair.primary).pipeline(transaction=False)
            p.get("x")
            p.execute_command("WAIT", 1, 100)
            if p.execute()[1] >= 1:
                return
        raise RuntimeError("the replica did not catch up")


def options(pair: PrivateSentinel, **more: Any) -> dict[str, Any]:
    kw = production_kwargs()
    kw["redis"] = f"redis://127.0.0.1:{pair.primary}/0"
    return {**kw, "replicas_acked": 1, "replica_wait_ms": 50, "close_drain_timeout_ms": 200, **more}


def rows_of(campaign_id: int) -> list[tuple[int, str]]:
    with psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL")) as conn:
        cur = conn.execute("SELECT seq, user_id FROM coupons WHERE campaign_id = %s ORDER BY seq", (campaign_id,))
        return [(int(s), str(u)) for s, u in cur.fetchall()]


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} is not exported"
    return float(m.group(1))


def test_a_stock_move_waits_for_the_replica_and_the_sale_ends_exact(pair: PrivateSentinel) -> None:
    k, quantity = 3, 30
    kw = options(pair, writer_threads=0)  # no writer: its reads and heartbeats are writes too
    users = [f"mv{i}" for i in range(400)]
    hot = [u for u in users if shard_of(u, k) == 0]  # every request goes to shard 0
    r = pair.client(pair.primary)
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("moves-acked", quantity=quantity, shards=k)
        first = e.issue_many(c.id, hot[:10])  # shard 0's own stock: 1..10
        assert sorted(x.seq for x in first if x.issued) == list(range(1, 11))
        before = e.counters()
        assert before["replica_waits"] > 0 and before["replica_wait_shortfalls"] == 0
        transfers = [f"{kw['key_prefix']}{{{shard_tag(c.id, s, k)}}}:x" for s in range(k)]
        with StoppedReplica(pair):
            # Shard 0 is dry: the stock to move is taken from shard 1, but no replica holds the
            # record, so nothing is given (a promoted donor would still list those seqs).
            with pytest.raises(couponcore.Unavailable, match="not yet replicated"):
                e.issue(c.id, hot[10])
            assert sum(r.hlen(x) for x in transfers) == 1  # the move waits in its record
            k2 = e.counters()
            assert k2["replica_wait_shortfalls"] > before["replica_wait_shortfalls"]
            text = e.metrics_text()
            assert metric(text, "couponcore_replica_wait_shortfalls_total") >= 1
            assert metric(text, "couponcore_replica_waits_total") >= k2["replica_waits"] > before["replica_waits"]
        # The replica is back: the record is settled once and the sale goes on to the last coupon.
        answers = [e.issue(c.id, u) for u in hot[10:60]]
        issued = [x.seq for x in first + answers if x.issued]
        assert sorted(issued) == list(range(1, quantity + 1))  # every coupon once, none twice
        assert answers[-1].status == couponcore.Status.SOLD_OUT
        assert sum(r.hlen(x) for x in transfers) == 0
        rep = e.reconcile(c.id)  # re-drives the log (no writer here)
        assert rep["consistent"] and rep["redriven"] == quantity
        assert [s for s, _ in rows_of(c.id)] == list(range(1, quantity + 1))


def test_the_sold_out_fast_path_of_a_sharded_campaign(pair: PrivateSentinel) -> None:
    """Once every shard is dry, the answers come without a round trip (the fast path counter),
    ALREADY_ISSUED for holders at their limit, SOLD_OUT for the others; a pause reaches it."""
    k, quantity = 3, 12
    with couponcore.open(**options(pair, replicas_acked=0)) as e:
        c = e.campaigns.create("fast-sharded", quantity=quantity, shards=k)
        buyers = [f"fp{i}" for i in range(quantity)]
        assert all(x.issued for x in e.issue_many(c.id, buyers))
        assert e.issue(c.id, "late-0").status == couponcore.Status.SOLD_OUT  # every shard dry
        # The path is armed right after that answer, on the gate's thread: wait for it.
        deadline = time.monotonic() + 5
        while e.counters()["fast_path"] == 0:
            assert e.issue(c.id, "late-probe").status == couponcore.Status.SOLD_OUT
            assert time.monotonic() < deadline, "the fast path was not armed"
        fast0 = e.counters()["fast_path"]
        late = e.issue_many(c.id, [f"late-{i}" for i in range(1, 50)])
        assert {x.status for x in late} == {couponcore.Status.SOLD_OUT}
        assert e.counters()["fast_path"] - fast0 == 49  # no round trip
        again = e.issue_many(c.id, buyers)  # holders at their limit, from every shard
        assert {x.status for x in again} == {couponcore.Status.ALREADY_ISSUED}
        e.campaigns.pause(c.id)
        assert e.issue(c.id, "late-x").status == couponcore.Status.NOT_OPEN
        e.campaigns.resume(c.id)
        assert e.issue(c.id, "late-y").status == couponcore.Status.SOLD_OUT
        assert e.drain(20)
        assert len(rows_of(c.id)) == quantity


def test_reconcile_redrives_only_what_the_replica_holds(pair: PrivateSentinel) -> None:
    kw = options(pair, writer_threads=0)  # the grants stay in the log for reconcile
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("reconcile-acked", quantity=10)
        assert all(x.issued for x in e.issue_many(c.id, ["a", "b", "c"]))
        with StoppedReplica(pair):
            # In the master's log, not on the replica: not ISSUED, and not written by reconcile.
            with pytest.raises(couponcore.Unavailable, match="not yet replicated"):
                e.issue(c.id, "d")
            shortfalls = e.counters()["replica_wait_shortfalls"]
            with pytest.raises(couponcore.Unavailable, match="not yet replicated: reconcile"):
                e.reconcile(c.id)
            assert rows_of(c.id) == []
            assert e.counters()["replica_wait_shortfalls"] == shortfalls + 1
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["redriven"] == 4 and rep["gate_issued"] == 4
        assert sorted(u for _, u in rows_of(c.id)) == ["a", "b", "c", "d"]


@pytest.fixture
def three_sentinels() -> Iterator[PrivateSentinel]:
    s = PrivateSentinel(down_after_ms=1000, sentinels=3, quorum=2, sentinel_password="s3cret/pw")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_three_sentinels_with_a_password_fail_over_mid_sale(three_sentinels: PrivateSentinel) -> None:
    """Three sentinels (quorum 2) that require a password, given in the URL: wrong or missing
    credentials are Unavailable with the sentinels' words; the primary killed mid-sale is found
    again through them with no acknowledged grant lost."""
    s = three_sentinels
    kw = production_kwargs()
    assert "sentinel_password=s3cret%2Fpw" in s.url
    for url, match in [
        (s.url.split("?")[0], "NOAUTH|Authentication required"),
        (s.url.replace("s3cret%2Fpw", "wrong"), "AUTH refused"),
    ]:
        with pytest.raises(couponcore.Unavailable, match=match):
            couponcore.open(**{**kw, "redis": url})
    res = run_sale(
        s, kw["postgres"], kw["key_prefix"], mode="kill", acked=True, quantity=1000, threads=6, replica_wait_ms=100
    )
    print(res.row())
    assert 0 < res.issued_before and res.issued_at_promotion < res.quantity and res.drained
    assert res.unknown == 0 and res.lost == 0 and res.dup_seqs == 0 and res.over == 0
    assert res.acks == res.quantity == res.rows


@pytest.mark.parametrize(
    "query, match",
    [
        ("?sentinel_pasword=x", "unknown parameter 'sentinel_pasword'"),
        ("?sentinel_username=u", "sentinel_username needs sentinel_password"),
    ],
)
def test_bad_sentinel_parameters_are_invalid(query: str, match: str) -> None:
    kw = production_kwargs()
    kw["redis"] = f"redis+sentinel://127.0.0.1:{free_ports(1)[0]}/m{query}"
    with pytest.raises(couponcore.InvalidArgument, match=match):
        couponcore.open(**kw)
