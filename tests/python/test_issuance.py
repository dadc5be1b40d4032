"""Issuance from Python: the API, its guarantees, its errors. Every test but the last runs on both
deployments (the `engine` / `open_deployment` fixtures); `:memory:` is embedded only."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import couponcore
import pytest
from conftest import stats
from couponcore import Status


def test_issue_until_sold_out(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("drop", quantity=3)
    assert engine.gate_issued(c.id) == 0
    results = [engine.issue(c.id, f"u{i}") for i in range(5)]
    assert [r.status for r in results] == [Status.ISSUED] * 3 + [Status.SOLD_OUT] * 2
    assert [r.seq for r in results] == [1, 2, 3, None, None]
    assert results[0].coupon_id == (c.id << 32) | 1
    assert results[0].status == "ISSUED"  # a str enum
    assert engine.issue(c.id, "u1").status is Status.ALREADY_ISSUED
    st = stats(engine, c.id)
    assert (st.rows, st.distinct_users, st.min_seq, st.max_seq) == (3, 3, 1, 3)
    assert engine.gate_issued(c.id) == 3
    with pytest.raises(couponcore.NotFound):
        engine.gate_issued(c.id + 1000)


def test_issue_many_is_one_ordered_batch(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("drop", quantity=2)
    r = engine.issue_many(c.id, ["a", "b", "a", "c"])
    assert [x.status for x in r] == [Status.ISSUED, Status.ISSUED, Status.ALREADY_ISSUED, Status.SOLD_OUT]
    assert engine.issue_many(c.id, []) == []


def test_per_user_limit_above_one(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("multi", quantity=10, per_user_limit=3)
    r = engine.issue_many(c.id, ["u"] * 4)
    assert [x.status for x in r] == [Status.ISSUED] * 3 + [Status.ALREADY_ISSUED]
    assert stats(engine, c.id).rows == 3


def test_request_id_retry_returns_first_answer(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("drop", quantity=5, per_user_limit=5)
    first = engine.issue(c.id, "bob", request_id="press-1")
    again = engine.issue(c.id, "bob", request_id="press-1")
    assert again == first and again.seq == 1
    assert stats(engine, c.id).rows == 1
    assert engine.issue(c.id, "bob", request_id="press-2").seq == 2


def test_window(engine: couponcore.Engine) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    later = engine.campaigns.create("later", quantity=5, starts_at=now + dt.timedelta(hours=1))
    over = engine.campaigns.create(
        "over", quantity=5, starts_at=now - dt.timedelta(hours=2), ends_at=now - dt.timedelta(hours=1)
    )
    assert engine.issue(later.id, "u").status is Status.NOT_OPEN
    assert engine.issue(over.id, "u").status is Status.ENDED
    assert later.starts_at is not None and abs((later.starts_at - (now + dt.timedelta(hours=1))).total_seconds()) < 1e-3


def test_reopen_restores_state(open_deployment: Callable[..., couponcore.Engine]) -> None:
    with open_deployment() as e:
        c = e.campaigns.create("drop", quantity=3)
        e.issue(c.id, "a", request_id="ra")
        e.issue(c.id, "b")
    with open_deployment() as e:
        assert e.campaigns.get(c.id) == c
        assert e.issue(c.id, "a").status is Status.ALREADY_ISSUED
        assert e.issue(c.id, "a", request_id="ra").seq == 1
        assert e.issue(c.id, "z").seq == 3
        assert e.issue(c.id, "y").status is Status.SOLD_OUT


def test_threads_issue_in_parallel_and_invariants_hold(engine: couponcore.Engine) -> None:
    quantity, threads_n, per_thread = 3000, 32, 200
    c = engine.campaigns.create("stampede", quantity=quantity)
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(per_thread):
            user = f"u{(t * 7919 + i * 31) % 5000}"
            r = engine.issue(c.id, user)
            if r.status is Status.ISSUED:
                with lock:
                    got.append((user, r.seq))

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seqs = sorted(s for _, s in got)
    users = [u for u, _ in got]
    assert len(set(users)) == len(users)  # never twice to one user
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, no repeats
    st = stats(engine, c.id)
    assert st.rows == len(got) and st.distinct_users == len(got)
    assert engine.counters()["commits"] < len(got)  # group commit: callers shared commits


def test_gil_is_released_while_waiting(engine: couponcore.Engine) -> None:
    """While one thread waits inside issue_many, another Python thread keeps running."""
    c = engine.campaigns.create("big", quantity=100_000)
    users = [f"user-{i}" for i in range(100_000)]
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=ticker)
    t.start()
    try:
        before = ticks
        results = engine.issue_many(c.id, users)
        during = ticks - before
    finally:
        stop.set()
        t.join()
    assert sum(r.issued for r in results) == 100_000
    # A GIL held for the whole call would let the ticker run only at the switch interval
    # boundaries before the call; released, it spins thousands of times during the wait.
    assert during > 1000


def test_bad_input_raises_typed_errors_and_changes_nothing(engine: couponcore.Engine) -> None:
    campaigns_before = len(engine.campaigns.list())
    with pytest.raises(couponcore.InvalidArgument, match="quantity"):
        engine.campaigns.create("x", quantity=0)
    with pytest.raises(couponcore.InvalidArgument):
        engine.campaigns.create("x", quantity=-1)
    with pytest.raises(couponcore.InvalidArgument, match="ends_at"):
        engine.campaigns.create("x", quantity=1, starts_at=200, ends_at=100)
    with pytest.raises(couponcore.InvalidArgument, match="name"):
        engine.campaigns.create("", quantity=1)
    with pytest.raises(couponcore.InvalidType):
        engine.campaigns.create("x", quantity=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # InvalidType is a TypeError too
        engine.campaigns.create("x", quantity="10")  # type: ignore[arg-type]
    assert len(engine.campaigns.list()) == campaigns_before

    c = engine.campaigns.create("x", quantity=5)
    with pytest.raises(couponcore.NotFound):
        engine.issue(c.id + 1000, "u")
    with pytest.raises(couponcore.InvalidArgument, match="empty"):
        engine.issue(c.id, "")
    with pytest.raises(couponcore.InvalidArgument, match="128"):
        engine.issue(c.id, "u" * 129)
    with pytest.raises(couponcore.InvalidArgument):
        engine.issue(c.id, "user}{evil")
    for surrogate in ("\ud800", "ok\udfff"):  # a str with no UTF-8 form: typed, not UnicodeEncodeError
        with pytest.raises(couponcore.InvalidArgument, match="surrogate"):
            engine.issue(c.id, surrogate)
        with pytest.raises(couponcore.InvalidArgument, match="surrogate"):
            engine.issue(c.id, "u", request_id=surrogate)
        with pytest.raises(couponcore.InvalidArgument, match="surrogate"):
            engine.points.earn(surrogate, 5, idempotency_key="k")
    with pytest.raises(couponcore.InvalidType):
        engine.issue(c.id, 42)  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidType):
        engine.issue("1", "u")  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidType):
        engine.issue_many(c.id, "abc")  # a str is not a batch
    with pytest.raises(couponcore.InvalidArgument):
        engine.issue_many(c.id, ["ok", "not ok"])
    with pytest.raises(couponcore.InvalidArgument, match="as many"):
        engine.issue_many(c.id, ["a", "b"], request_ids=["r1"])
    with pytest.raises(couponcore.InvalidArgument, match="at most"):
        engine.issue_many(c.id, ["u"] * 100_001)
    assert stats(engine, c.id).rows == 0
    assert engine.counters()["requests"] == 0
    assert isinstance(couponcore.InvalidArgument("x"), couponcore.Error)
    assert isinstance(couponcore.InvalidArgument("x"), ValueError)
    assert isinstance(couponcore.NotFound("x"), LookupError)


def test_closed_engine_refuses(open_deployment: Callable[..., couponcore.Engine]) -> None:
    e = open_deployment()
    c = e.campaigns.create("x", quantity=1)
    e.close()
    assert e.closed
    with pytest.raises(couponcore.Closed):
        e.issue(c.id, "u")
    e.close()  # idempotent
    with open_deployment() as e2:
        assert not e2.closed
    assert e2.closed


def test_memory_engine() -> None:  # embedded only: ":memory:" is a SQLite path
    with couponcore.open(":memory:") as e:
        c = e.campaigns.create("x", quantity=1)
        assert e.issue(c.id, "u").issued
