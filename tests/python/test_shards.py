"""Sharded campaigns (campaigns.create(..., shards=K)) on the test Redis Cluster: exact totals,
the per-user limit, no SOLD_OUT answered while stock remains in another shard (checked against
the log of answers and the grants' Redis times), stock moves cut half-way, and bad input."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import couponcore
import psycopg
import pytest
from conftest import env_url, stats
from test_cluster import CLUSTER, cluster_kwargs, needs_cluster
from test_dead_letters import FAST_DEAD_LETTERS, Refusal, _wait_dead_letters

SHARDS_MAX = 16


@pytest.fixture
def shard_refusal() -> Iterator[Refusal]:
    couponcore.migrate(env_url("COUPONCORE_TEST_POSTGRES_URL"))
    r = Refusal()
    yield r
    r.fix()


def shard_of(user: str, shards: int) -> int:
    """The core's routing (redis::shard_of_user): FNV-1a 64 of the user id, modulo shards."""
    h = 1469598103934665603
    for b in user.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def shard_tag(campaign_id: int, shard: int, shards: int) -> str:
    """The core's hash tag of a shard (redis/keys.cpp): the first c<N>.s<s>.<j> whose slot lies in
    the s-th of K equal bands of the 16,384 slots."""
    j = 0
    while True:
        tag = f"c{campaign_id}.s{shard}.{j}"
        if (crc16(tag.encode()) & 16383) * shards // 16384 == shard:
            return tag
        j += 1


def rows_of(campaign_id: int) -> list[tuple[int, str, int]]:
    with psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL")) as conn:
        cur = conn.execute(
            "SELECT seq, user_id, issued_at_us FROM coupons WHERE campaign_id = %s ORDER BY seq", (campaign_id,)
        )
        return [(int(s), str(u), int(t)) for s, u, t in cur.fetchall()]


@needs_cluster
def test_sharded_campaign_exact_totals_limit_and_no_sold_out_while_stock_remains() -> None:
    k, quantity, limit = 3, 3000, 2
    users = [f"su{i}" for i in range(2400)]  # 4800 coupons could be held: demand exceeds stock
    hot = [u for u in users if shard_of(u, k) == 0]
    # Most requests come from shard 0's users, so shard 0 runs dry early and stock must move to it.
    pool = hot * 6 + users
    with couponcore.open(**cluster_kwargs()) as e:
        c = e.campaigns.create("sharded", quantity=quantity, per_user_limit=limit, shards=k)
        assert c.shards == k and e.campaigns.get(c.id).shards == k
        answers: list[tuple[int, int, str, str, int]] = []  # (started_ns, returned_ns, user, status, seq)
        lock = threading.Lock()
        stop = threading.Event()

        def worker(t: int) -> None:
            rnd = random.Random(t)
            while not stop.is_set():
                batch = [rnd.choice(pool) for _ in range(16)]
                started = time.time_ns()
                results = e.issue_many(c.id, batch)
                returned = time.time_ns()
                with lock:
                    for u, r in zip(batch, results):
                        answers.append((started, returned, u, r.status, r.seq if r.issued else 0))
                    sold_out = sum(1 for a in answers if a[3] == "SOLD_OUT")
                if sold_out >= 200:
                    stop.set()

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not any(th.is_alive() for th in threads)

        issued = [a for a in answers if a[3] == "ISSUED"]
        seqs = sorted(a[4] for a in issued)
        assert seqs == list(range(1, quantity + 1))  # every coupon once, no seq twice
        per_user: dict[str, int] = {}
        for a in issued:
            per_user[a[2]] = per_user.get(a[2], 0) + 1
        assert max(per_user.values()) == limit  # the limit was reached, never passed
        assert sum(1 for a in issued if shard_of(a[2], k) == 0) > quantity // k  # stock moved to shard 0
        sold_outs = [a for a in answers if a[3] == "SOLD_OUT"]
        assert sold_outs
        # No SOLD_OUT before the last coupon was gone: no ISSUED answer to a call that started
        # after some SOLD_OUT had been returned, and every grant's gate time (Redis TIME, same
        # host clock) comes before the first SOLD_OUT answer returned.
        first_sold_out_returned = min(a[1] for a in sold_outs)
        assert not [a for a in issued if a[0] > first_sold_out_returned]
        st = stats(e, c.id)
        assert (st.rows, st.max_seq) == (quantity, quantity)
        rows = rows_of(c.id)
        assert [r[0] for r in rows] == list(range(1, quantity + 1))
        assert max(r[2] for r in rows) * 1000 <= first_sold_out_returned
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == quantity and rep["gate_holders"] == len(per_user)


@needs_cluster
def test_sharded_rules_and_bad_input() -> None:
    with couponcore.open(**cluster_kwargs()) as e:
        before = len(e.campaigns.list())
        for bad in (0, -1, SHARDS_MAX + 1, 1000):
            with pytest.raises(couponcore.InvalidArgument, match="shards"):
                e.campaigns.create("bad", quantity=10, shards=bad)
        with pytest.raises(couponcore.InvalidArgument, match="shards"):
            e.campaigns.create("bad", quantity=2, shards=3)  # fewer coupons than shards
        with pytest.raises((couponcore.InvalidType, couponcore.InvalidArgument)):
            e.campaigns.create("bad", quantity=10, shards="3")  # type: ignore[arg-type]
        assert len(e.campaigns.list()) == before  # nothing written
        c = e.campaigns.create("rules", quantity=30, shards=SHARDS_MAX)
        e.campaigns.pause(c.id)
        assert all(r.status == "NOT_OPEN" for r in e.issue_many(c.id, [f"p{i}" for i in range(40)]))
        e.campaigns.resume(c.id)
        with pytest.raises(couponcore.InvalidArgument, match="only be raised"):
            e.campaigns.set_quantity(c.id, 20)
        results = e.issue_many(c.id, [f"p{i}" for i in range(40)])
        assert sorted(r.seq for r in results if r.issued) == list(range(1, 31))
        assert [r.status for r in results].count("SOLD_OUT") == 10
        assert e.campaigns.get(c.id).quantity == 30
        # Raised after the sell-out: the new seqs, once, though the call is repeated.
        for _ in range(2):
            assert e.campaigns.set_quantity(c.id, 45).quantity == 45
        more = e.issue_many(c.id, [f"q{i}" for i in range(20)])
        assert sorted(r.seq for r in more if r.issued) == list(range(31, 46))
        assert [r.status for r in more].count("SOLD_OUT") == 5
        assert e.drain(20)
        st = stats(e, c.id)
        assert (st.rows, st.max_seq) == (45, 45)
        assert e.reconcile(c.id)["consistent"]


def test_embedded_accepts_shards_and_decides_in_one_gate(db_path: str) -> None:
    with couponcore.open(db_path) as e:
        with pytest.raises(couponcore.InvalidArgument, match="shards"):
            e.campaigns.create("bad", quantity=10, shards=SHARDS_MAX + 1)
        assert e.campaigns.list() == []
        c = e.campaigns.create("embedded", quantity=5, shards=3)
        assert c.shards == 1 and e.campaigns.get(c.id).shards == 1  # one gate decides
        assert sorted(r.seq for r in e.issue_many(c.id, [f"x{i}" for i in range(8)]) if r.issued) == [1, 2, 3, 4, 5]


@needs_cluster
def test_stock_moves_cut_half_way_are_settled_once() -> None:
    import redis

    kw = cluster_kwargs()
    prefix = kw["key_prefix"]
    quantity = 300
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("moves", quantity=quantity, shards=3)
        rc = redis.RedisCluster.from_url("redis://" + CLUSTER.split("//", 1)[1].split(",")[0])
        try:
            tags = [shard_tag(c.id, s, 3) for s in range(3)]
            masters = {rc.get_node_from_key("{" + t + "}").name for t in tags}
            assert len(masters) == 3  # one shard per master of the test cluster
            meta = [f"{prefix}{{{t}}}:m" for t in tags]
            assert [rc.hget(m, "f") for m in meta] == [b"1-100", b"101-200", b"201-300"]
            # A move cut after its take: 181-200 left shard 1 for shard 0, recorded, never given.
            rc.hset(meta[1], mapping={"f": "101-180", "r": 80})
            rc.hset(f"{prefix}{{{tags[1]}}}:x", "cut-1", "0 181-200")
            # A move cut after its give: 281-300 went from shard 2 to shard 0 (given, recorded as
            # received) but the donor's record was never deleted: it must not be added twice.
            rc.hset(meta[2], mapping={"f": "201-280", "r": 80})
            rc.hset(meta[0], mapping={"f": "1-100,281-300", "r": 120})
            rc.sadd(f"{prefix}{{{tags[0]}}}:rx", "cut-2")
            rc.hset(f"{prefix}{{{tags[2]}}}:x", "cut-2", "0 281-300")
        finally:
            rc.close()
        # Users of every shard, more than the stock: every coupon goes, none twice.
        results = e.issue_many(c.id, [f"m{i}" for i in range(400)])
        seqs = sorted(r.seq for r in results if r.issued)
        assert seqs == list(range(1, quantity + 1))
        assert [r.status for r in results].count("SOLD_OUT") == 100
        st = stats(e, c.id)
        assert (st.rows, st.distinct_users, st.max_seq) == (quantity, quantity, quantity)
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == quantity and rep["dead_lettered"] == 0
        # The core routes users as shard_of does: each holder is in its shard's hash only.
        rc = redis.RedisCluster.from_url("redis://" + CLUSTER.split("//", 1)[1].split(",")[0])
        try:
            holders = [f"{prefix}{{{shard_tag(c.id, s, 3)}}}:h" for s in range(3)]
            for r, i in zip(results, range(400)):
                if r.issued:
                    where = [s for s in range(3) if rc.hexists(holders[s], f"m{i}")]
                    assert where == [shard_of(f"m{i}", 3)]
        finally:
            rc.close()


@needs_cluster
def test_a_lost_shard_is_rebuilt_without_its_free_seqs_and_nothing_is_issued_twice() -> None:
    import redis

    kw = cluster_kwargs()
    prefix = kw["key_prefix"]
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("lost", quantity=300, shards=3)
        first = e.issue_many(c.id, [f"l{i}" for i in range(90)])
        assert all(r.issued for r in first)
        assert e.drain(60.0)
        tag = shard_tag(c.id, 1, 3)
        rc = redis.RedisCluster.from_url("redis://" + CLUSTER.split("//", 1)[1].split(",")[0])
        try:
            left_in_lost = int(rc.hget(f"{prefix}{{{tag}}}:m", "r") or 0)
            assert left_in_lost > 0
            rc.delete(f"{prefix}{{{tag}}}:m", f"{prefix}{{{tag}}}:h")  # shard 1's master lost its data
        finally:
            rc.close()
        # The first users again (their holdings are rebuilt from the store: ALREADY_ISSUED), then
        # new users until the stock the surviving shards hold is gone.
        again = e.issue_many(c.id, [f"l{i}" for i in range(90)])
        assert all(r.status == "ALREADY_ISSUED" for r in again)
        more = e.issue_many(c.id, [f"n{i}" for i in range(400)])
        seqs = [r.seq for r in first + more if r.issued]
        assert len(seqs) == len(set(seqs))  # nothing issued twice
        assert len(seqs) == 300 - left_in_lost  # the lost shard's unsold stock is not sold
        assert more[-1].status == "SOLD_OUT"
        st = stats(e, c.id)
        assert st.rows == len(seqs)
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == len(seqs)


@needs_cluster
def test_two_gates_moving_stock_of_one_campaign_issue_every_coupon_once() -> None:
    k, quantity = 4, 2000
    kw = cluster_kwargs()
    with couponcore.open(**kw) as a, couponcore.open(**kw) as b:
        c = a.campaigns.create("two gates", quantity=quantity, per_user_limit=3, shards=k)
        users = [f"g{i}" for i in range(1500)]
        issued: list[tuple[str, int]] = []
        lock = threading.Lock()

        def worker(t: int) -> None:
            e = a if t % 2 else b
            rnd = random.Random(t)
            # Each gate favours other shards, so both keep moving stock in opposite directions.
            favoured = [u for u in users if shard_of(u, k) in ((0, 1) if t % 2 else (2, 3))]
            for _ in range(60):
                batch = [rnd.choice(favoured if rnd.random() < 0.8 else users) for _ in range(20)]
                results = e.issue_many(c.id, batch)
                with lock:
                    issued.extend((u, r.seq) for u, r in zip(batch, results) if r.issued)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert sorted(s for _, s in issued) == list(range(1, quantity + 1))
        per_user: dict[str, int] = {}
        for u, _ in issued:
            per_user[u] = per_user.get(u, 0) + 1
        assert max(per_user.values()) <= 3
        st = stats(a, c.id)
        assert (st.rows, st.max_seq) == (quantity, quantity)
        rep = b.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == quantity


@needs_cluster
def test_a_sharded_campaigns_dead_letters_are_listed_shown_redriven_and_dropped(
    shard_refusal: Refusal,
) -> None:
    refusal = shard_refusal
    with couponcore.open(**cluster_kwargs(), **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dead letters", quantity=60, shards=3)
        blocked = [f"{refusal.prefix}{i}" for i in range(12)]
        assert {shard_of(u, 3) for u in blocked} == {0, 1, 2}  # dead letters in every shard
        results = e.issue_many(c.id, blocked + [f"ok{i}" for i in range(48)])
        assert all(r.issued for r in results)
        dls = _wait_dead_letters(e, c.id, 12)
        assert sorted(d.seq for d in dls) == sorted(r.seq for r in results[:12])
        assert len({d.id for d in dls}) == 12  # ids unique across the shards' streams
        for d in dls:
            assert e.dead_letters.get(c.id, d.id) == d
        assert e.dead_letters.list(c.id, after=dls[4].id) == dls[5:]  # pages across shards
        everything = [d for d in e.dead_letters.list() if d.campaign_id == c.id]
        assert everything == dls
        assert e.dead_letters.list(after=f"{c.id}:{dls[6].id}")[:5] == dls[7:]
        dropped = dls[0]
        assert e.dead_letters.drop(c.id, dropped.id) == dropped  # its seq back to its shard
        assert e.gate_issued(c.id) == 59
        refusal.fix()
        for d in dls[1:]:
            e.dead_letters.redrive(c.id, d.id)
        again = e.issue(c.id, dropped.user_id or "")  # the user's shard has that one seq
        assert again.issued and again.seq == dropped.seq
        assert e.drain(20)
        st = stats(e, c.id)
        assert (st.rows, st.distinct_users, st.max_seq) == (60, 60, 60)
        assert e.dead_letters.list(c.id) == []
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == 60 and rep["dead_lettered"] == 0


@needs_cluster
def test_sold_out_event_comes_once_after_every_coupon_issued_of_a_sharded_campaign() -> None:
    """campaign.sold_out is written by the writer transaction whose grants complete the quantity
    in the store, so with 4 shards, 4 writer threads and 16 issuing threads it comes exactly once
    and after every coupon.issued of the campaign (by sequence, as the stream delivers them). The
    last shard's users come first: its interval (which holds seq == quantity) runs dry while the
    others still grant. Raising the quantity and selling out again gives one more, after the rest."""
    from test_events import collect, group, of_campaign

    k, quantity, more = 4, 800, 80
    with couponcore.open(**cluster_kwargs(), writer_threads=4) as e:
        c = e.campaigns.create("sold-out order", quantity=quantity, shards=k)
        users = [f"so{c.id}-{i}" for i in range(quantity + more + 100)]
        last_shard = [u for u in users if shard_of(u, k) == k - 1]
        rest = [u for u in users if shard_of(u, k) != k - 1]

        def sell(pool: list[str]) -> list[tuple[str, couponcore.IssueResult]]:
            out: list[tuple[str, couponcore.IssueResult]] = []
            lock = threading.Lock()

            def worker(t: int) -> None:
                got = [(u, e.issue(c.id, u)) for u in pool[t::16]]
                with lock:
                    out.extend(got)

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return out

        first = sell(last_shard) + sell(rest)
        assert sum(r.issued for _, r in first) == quantity
        assert stats(e, c.id).rows == quantity  # written (a quantity raised before that: no sold_out for 800)
        e.campaigns.set_quantity(c.id, quantity + more)
        second = sell([u for u, r in first if not r.issued])
        assert sum(r.issued for _, r in second) == more
        assert stats(e, c.id).rows == quantity + more
        got = collect(e, group(), of_campaign(c.id), quantity + more + 2, ["coupon.issued", "campaign.sold_out"])
    issued = [ev for ev in got if ev.type == "coupon.issued"]
    sold = [ev for ev in got if ev.type == "campaign.sold_out"]
    assert len(issued) == len({ev.id for ev in issued}) == quantity + more
    assert [ev.id for ev in sold] == [
        f"campaign.sold_out:{c.id}:{quantity}",
        f"campaign.sold_out:{c.id}:{quantity + more}",
    ]
    first_coupons = {r.coupon_id for _, r in first if r.issued}
    assert max(ev.sequence for ev in issued if ev.data["coupon_id"] in first_coupons) < sold[0].sequence
    assert max(ev.sequence for ev in issued) < sold[1].sequence
    assert sold[0].data["quantity"] == quantity and sold[1].data["quantity"] == quantity + more
    assert sold[0].data["last_coupon_id"] in first_coupons
    assert sold[1].data["last_coupon_id"] in {ev.data["coupon_id"] for ev in issued}
