"""The outbox relay (docs/events.md) against real servers: engines with different key prefixes on
one PostgreSQL database each relay only their own events; on Redis Cluster a consumer reading
several types while writers run gets every subject's events in sequence order (the relay's
watermark)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import couponcore
import pytest
from conftest import production_kwargs
from couponcore.events import Event


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def drain_group(engine: couponcore.Engine, group: str, types: list[str], idle_s: float = 2.0) -> list[Event]:
    """Every event the group gets until none came for idle_s, acknowledged."""
    got: list[Event] = []
    for e in engine.events.consume(group, types, block_ms=100, idle_timeout_s=idle_s):
        got.append(e)
        e.ack()
    return got


def test_engines_with_different_prefixes_on_one_database_each_relay_only_their_own() -> None:
    kw_a, kw_b = production_kwargs(), production_kwargs()
    assert kw_a["key_prefix"] != kw_b["key_prefix"] and kw_a["postgres"] == kw_b["postgres"]
    a, b = couponcore.open(**kw_a), couponcore.open(**kw_b)
    try:
        ca = a.campaigns.create("prefix-a", quantity=40)
        cb = b.campaigns.create("prefix-b", quantity=60)
        a.issue_many(ca.id, [uid("a") for _ in range(40)])
        b.issue_many(cb.id, [uid("b") for _ in range(60)])
        a.points.earn(uid("wa"), 5, idempotency_key=uid("k"))
        assert a.drain(30) and b.drain(30)
        types = ["coupon.issued", "campaign.sold_out", "points.earned"]
        got_a, got_b = drain_group(a, uid("g"), types), drain_group(b, uid("g"), types)
        # Each prefix's streams hold its own events, all of them, and none of the other's.
        assert sorted(e.type for e in got_a) == ["campaign.sold_out"] + ["coupon.issued"] * 40 + ["points.earned"]
        assert {e.data["campaign_id"] for e in got_a if e.type != "points.earned"} == {ca.id}
        assert sorted(e.type for e in got_b) == ["campaign.sold_out"] + ["coupon.issued"] * 60
        assert {e.data["campaign_id"] for e in got_b} == {cb.id}
        # Both relays are active at once (one per prefix), each sees only its own backlog.
        sa, sb = a.events.stats(), b.events.stats()
        assert sa["relay_active"] and sb["relay_active"]
        assert sa["outbox_rows"] == 0 and sb["outbox_rows"] == 0
        assert sa["relayed"] == 42 and sb["relayed"] == 61
    finally:
        a.close()
        b.close()


def test_a_key_value_postgres_url_with_its_own_options_still_tags_the_prefix() -> None:
    import psycopg.conninfo

    kw = production_kwargs()
    params = psycopg.conninfo.conninfo_to_dict(kw["postgres"])
    kw["postgres"] = psycopg.conninfo.make_conninfo(**params, options="-c lock_timeout=10s")
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("kv-url", quantity=3)
        e.issue_many(c.id, [uid("u") for _ in range(3)])
        assert e.drain(30)
        got = drain_group(e, uid("g"), ["coupon.issued", "campaign.sold_out"])
        assert sorted(ev.type for ev in got) == ["campaign.sold_out"] + ["coupon.issued"] * 3
        assert e.events.stats()["outbox_rows"] == 0


def test_a_standby_relay_of_the_same_prefix_stays_inactive() -> None:
    kw = production_kwargs()
    with couponcore.open(**kw) as first:
        deadline = time.monotonic() + 10
        while not first.events.stats()["relay_active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        with couponcore.open(**kw, writer_threads=0) as second:
            time.sleep(0.5)  # a few of its polls
            assert [first.events.stats()["relay_active"], second.events.stats()["relay_active"]] == [True, False]


def cluster_kwargs() -> dict[str, str]:
    cluster = os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER", "")
    if not cluster:
        pytest.fail("COUPONCORE_TEST_REDIS_CLUSTER is not set: run the suite with `make test`")
    kw = production_kwargs()
    kw["redis"] = "redis+cluster://" + cluster.removeprefix("redis+cluster://")
    return kw


def test_on_redis_cluster_a_multi_type_consumer_gets_each_subject_in_sequence_order_while_writers_run() -> None:
    kw = cluster_kwargs()
    users_per_thread, threads_n, coupons = 120, 4, 500
    # points: earned, used, earned, used per user (one subject, two type streams);
    # coupons: issued, used (one subject, two type streams), plus the campaign's sold_out.
    expected = users_per_thread * threads_n * 4 + coupons * 2 + 1
    types = ["coupon.issued", "coupon.used", "points.earned", "points.used", "campaign.sold_out"]
    with couponcore.open(**kw, events_relay_batch_max=200) as e:
        c = e.campaigns.create("ordered", quantity=coupons, discount_kind="fixed", discount_value=1)
        first_seen: dict[str, Event] = {}
        order: list[Event] = []  # first deliveries, in the order the consumer got them
        done = threading.Event()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                stream = e.events.consume(uid("g"), types, batch=50, block_ms=50)
                deadline = time.monotonic() + 90
                while len(first_seen) < expected and time.monotonic() < deadline:
                    for ev in stream.read(block_ms=50):
                        ours = ev.data.get("campaign_id") == c.id or ev.id.startswith("points.")
                        if ours and ev.id not in first_seen:
                            first_seen[ev.id] = ev
                            order.append(ev)
                        ev.ack()
            except BaseException as x:  # noqa: BLE001 - reported by the test
                errors.append(x)
            finally:
                done.set()

        def wallet(t: int) -> None:
            try:
                for i in range(users_per_thread):
                    u = f"ord-{t}-{i}-{uuid.uuid4().hex[:6]}"
                    for r in range(2):
                        e.points.earn(u, 10, idempotency_key=f"{u}-e{r}")
                        e.points.use(u, 3, idempotency_key=f"{u}-u{r}", order_id=f"{u}-o{r}")
            except BaseException as x:  # noqa: BLE001
                errors.append(x)

        def issue_and_use() -> None:
            try:
                for j in range(0, coupons, 50):
                    users = [f"cu-{k}-{uuid.uuid4().hex[:6]}" for k in range(j, j + 50)]
                    rs = e.issue_many(c.id, users)
                    for u, r in zip(users, rs):
                        while True:
                            try:
                                e.coupons.use(r.coupon_id, u, f"o-{r.coupon_id}", 100)
                                break
                            except couponcore.Unavailable:  # not in the store yet
                                time.sleep(0.005)
            except BaseException as x:  # noqa: BLE001
                errors.append(x)

        reader = threading.Thread(target=consume)
        reader.start()
        writers = [threading.Thread(target=wallet, args=(t,)) for t in range(threads_n)]
        writers.append(threading.Thread(target=issue_and_use))
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        assert done.wait(120)
        reader.join()
        assert not errors, errors
        assert len(first_seen) == expected
        by_subject: dict[str, list[Event]] = {}
        for ev in order:
            by_subject.setdefault(ev.subject, []).append(ev)
        assert len(by_subject) == users_per_thread * threads_n + coupons + 1
        for subject, evs in by_subject.items():
            seqs = [ev.sequence for ev in evs]
            assert seqs == sorted(seqs), (subject, [(ev.type, ev.sequence) for ev in evs])
        # The wallets' events alternate earned / used; each coupon's issued comes before its used.
        for subject, evs in by_subject.items():
            kinds = [ev.type for ev in evs]
            if subject.startswith("wallet/"):
                assert kinds == ["points.earned", "points.used"] * 2, subject
            elif subject.startswith("coupon/"):
                assert kinds == ["coupon.issued", "coupon.used"], subject
