"""Point wallets from Python, on both deployments: semantics, idempotency, bad input, real
concurrency with invariants checked by audit(), and a SIGKILLed process losing nothing it was
told."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import couponcore
import pytest
from conftest import production_kwargs


def test_earn_use_cancel_transfer_balance_history(engine: couponcore.Engine) -> None:
    p = engine.points
    u, v = f"alice-{time.time_ns()}", f"bob-{time.time_ns()}"
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    p.earn(u, 50, idempotency_key=f"{u}-e1", expires_at=soon, reason="signup")
    p.earn(u, 100, idempotency_key=f"{u}-e2")  # never expires
    use = p.use(u, 70, idempotency_key=f"{u}-u1", order_id="order-1")
    assert (use.amount, use.balance_after) == (-70, 80)
    # First-expiring-first: the 50 expiring tomorrow went first, 20 came from the open lot.
    b = p.balance(u)
    assert b.total == 80 and b.next_expiry_amount == 0 and b.next_expiry_at is None
    cancel = p.cancel(u, use_key=f"{u}-u1", idempotency_key=f"{u}-c1")
    assert (cancel.amount, cancel.balance_after, cancel.expired_amount) == (70, 150, 0)
    b = p.balance(u)
    assert b.total == 150 and b.next_expiry_amount == 50  # exactly the drawn lots came back
    t = p.transfer(u, v, 30, idempotency_key=f"{u}-t1")
    assert t.balance_after == 120 and t.peer_entry_id is not None
    assert p.balance(v).total == 30
    kinds = [e.kind for e in p.history(u).entries]
    assert kinds == ["transfer_out", "cancel", "use", "earn", "earn"]
    page = p.history(u, limit=2)
    assert len(page.entries) == 2 and page.next_cursor is not None
    rest = p.history(u, cursor=page.next_cursor, limit=10)
    assert [e.kind for e in rest.entries] == ["use", "earn", "earn"]
    assert engine.points.audit()["ok"]


def test_idempotency(engine: couponcore.Engine) -> None:
    p = engine.points
    u = f"carol-{time.time_ns()}"
    first = p.earn(u, 10, idempotency_key=f"{u}-k")
    again = p.earn(u, 10, idempotency_key=f"{u}-k")
    assert again.replayed and again.entry_id == first.entry_id and p.balance(u).total == 10
    with pytest.raises(couponcore.Conflict):
        p.earn(u, 11, idempotency_key=f"{u}-k")  # same key, other content
    assert p.balance(u).total == 10


def test_bad_input_changes_nothing(engine: couponcore.Engine) -> None:
    p = engine.points
    u = f"dave-{time.time_ns()}"
    p.earn(u, 10, idempotency_key=f"{u}-ok")
    for bad in (0, -5, 10**19):
        with pytest.raises((couponcore.InvalidArgument, couponcore.InvalidType)):
            p.earn(u, bad, idempotency_key=f"{u}-bad{bad}")
    with pytest.raises(couponcore.InvalidType):
        p.earn(u, 1.5, idempotency_key=f"{u}-f")  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidArgument):
        p.earn("bad user", 5, idempotency_key=f"{u}-bu")
    with pytest.raises(couponcore.InvalidArgument):
        p.earn(u, 5, idempotency_key="")
    with pytest.raises(couponcore.InsufficientFunds):
        p.use(u, 11, idempotency_key=f"{u}-big")
    with pytest.raises(couponcore.NotFound):
        p.balance(f"nobody-{time.time_ns()}")
    with pytest.raises(couponcore.InvalidArgument):
        p.cancel(u, idempotency_key=f"{u}-c")  # neither entry_id nor use_key
    assert p.balance(u).total == 10
    assert [e.kind for e in p.history(u).entries] == ["earn"]


def test_concurrent_random_operations_keep_invariants(engine: couponcore.Engine) -> None:
    p = engine.points
    tag = time.time_ns()
    hot = [f"hot{i}-{tag}" for i in range(3)]
    cold = [f"cold{i}-{tag}" for i in range(200)]
    for w in hot + cold:
        p.earn(w, 1000, idempotency_key=f"seed-{w}")
    errors: list[BaseException] = []
    business = [0]

    def worker(t: int) -> None:
        rng = random.Random(t)
        uses: list[tuple[str, str]] = []
        for i in range(150):
            key = f"{tag}-{t}-{i}"
            a = rng.choice(hot) if rng.random() < 0.5 else rng.choice(cold)
            b = rng.choice(hot) if rng.random() < 0.5 else rng.choice(cold)
            r = rng.random()
            try:
                if r < 0.3:
                    p.earn(a, rng.randint(1, 50), idempotency_key=key)
                elif r < 0.6:
                    p.use(a, rng.randint(1, 80), idempotency_key=key)
                    uses.append((a, key))
                elif r < 0.7 and uses:
                    user, use_key = uses.pop(rng.randrange(len(uses)))
                    p.cancel(user, use_key=use_key, idempotency_key=key)
                elif a != b:
                    # Transfers both ways between hot wallets happen at once from many threads.
                    p.transfer(a, b, rng.randint(1, 60), idempotency_key=key)
            except couponcore.InsufficientFunds:
                business[0] += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[:3]  # no deadlock or retryable failure surfaced
    audit = engine.points.audit()
    assert audit["ok"], audit
    for w in hot + cold:
        assert p.balance(w).total >= 0


CHILD = textwrap.dedent(
    """
    import sys, threading, couponcore
    kw = eval(sys.argv[1])
    e = couponcore.open(**kw)
    lock = threading.Lock()
    def worker(t):
        i = 0
        while True:
            key = f"kill-{t}-{i}"
            r = e.points.earn(f"victim{t}", 1 + i % 7, idempotency_key=key)
            with lock:
                sys.stdout.write(f"{key} {r.entry_id} {r.amount}\\n"); sys.stdout.flush()
            i += 1
    for t in range(8):
        threading.Thread(target=worker, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize("deployment", ["embedded", "production"])
def test_sigkill_mid_batch_loses_nothing_acknowledged(deployment: str, db_path: str) -> None:
    kw: dict[str, str] = {"path": db_path} if deployment == "embedded" else production_kwargs()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, repr(kw)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    told = {}
    deadline = time.monotonic() + 60
    while len(told) < 1500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        key, entry, amount = line.split()
        told[key] = (int(entry), int(amount))
    os.kill(proc.pid, signal.SIGKILL)
    proc.stdout.close()
    proc.wait()
    assert len(told) >= 1500
    with couponcore.open(**kw) as e:
        for key, (entry, amount) in told.items():
            t = key.split("-")[1]
            r = e.points.earn(f"victim{t}", amount, idempotency_key=key)  # the retry a client makes
            assert r.replayed and r.entry_id == entry, key
        assert e.points.audit()["ok"]


def test_expiry_job_writes_off_lapsed_lots(engine: couponcore.Engine) -> None:
    p = engine.points
    u = f"erin-{time.time_ns()}"
    p.earn(u, 40, idempotency_key=f"{u}-short", expires_in_days=0.5 / 86_400)  # half a second
    p.earn(u, 60, idempotency_key=f"{u}-long")
    time.sleep(1.0)
    assert p.balance(u).total == 60  # lapsed points are not usable even before the job ran
    report = engine.points.expire()
    assert report["points"] >= 40 and report["wallets"] >= 1
    assert [e.kind for e in p.history(u).entries][0] == "expire"
    engine.points.expire(dt.datetime.now(dt.timezone.utc))  # a re-run is harmless: nothing more to write off
    assert p.balance(u).total == 60
    assert engine.points.audit()["ok"]


def test_idempotency_records_are_purged_by_age(engine: couponcore.Engine) -> None:
    """Retention: records older than the cutoff go (checkout records only when asked), in
    chunks; what a purge changes is exactly what the docs say (a purged key is new again,
    cancel by a purged use key is NotFound, by entry id still works); invariants hold."""
    scope = engine.partner(engine.partners.create("retention").partner)
    p = scope.points
    u = f"ret-{time.time_ns()}"
    earn = p.earn(u, 100, idempotency_key=f"{u}-earn")
    use = p.use(u, 10, idempotency_key=f"{u}-use")
    scope.checkout(u, f"{u}-order", 50, points=5, idempotency_key=f"{u}-co")
    time.sleep(0.01)
    cutoff = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    p.earn(u, 1, idempotency_key=f"{u}-late")

    r = engine.points.purge_idempotency(cutoff, chunk_rows=100)  # with earlier tests' records
    assert r["done"] and r["deleted"] >= 2 and r["chunks"] == r["deleted"] // 100 + 1
    assert p.earn(u, 1, idempotency_key=f"{u}-late").replayed  # newer than the cutoff: kept
    again = p.earn(u, 100, idempotency_key=f"{u}-earn")  # purged: a new operation
    assert not again.replayed and again.entry_id != earn.entry_id
    with pytest.raises(couponcore.NotFound):
        p.cancel(u, use_key=f"{u}-use", idempotency_key=f"{u}-c1")
    assert p.cancel(u, entry_id=use.entry_id, idempotency_key=f"{u}-c2").amount == 10
    # The checkout's record was kept, so the order can still be cancelled by its key.
    assert scope.cancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-cc").points_restored == 5
    assert p.balance(u).total == 100 - 10 + 1 + 100 + 10

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    partial = engine.points.purge_idempotency(later, chunk_rows=1, chunks_max=2)
    assert partial == {"deleted": 2, "chunks": 2, "done": False}  # run it again to go on
    rest = engine.points.purge_idempotency(later, include_checkouts=True)
    assert rest["done"] and rest["deleted"] >= 3  # the two left of late, earn, c2, cc; and the checkout
    with pytest.raises(couponcore.NotFound):
        scope.cancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-cc2")
    assert engine.points.audit()["ok"]

    for bad in (
        lambda: engine.points.purge_idempotency(later, chunk_rows=0),
        lambda: engine.points.purge_idempotency(later, chunk_rows=100_001),
        lambda: engine.points.purge_idempotency(later, chunks_max=0),
    ):
        with pytest.raises(couponcore.InvalidArgument):
            bad()
    with pytest.raises(couponcore.InvalidType):
        engine.points.purge_idempotency("yesterday")  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidType):
        engine.points.purge_idempotency(later, include_checkouts=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("deployment", ["embedded", "production"])
def test_wallet_options_reach_the_engine(deployment: str, db_path: str) -> None:
    """wallet_batch_ops_max bounds every batch under 32 concurrent callers; wallet_committers
    opens that many batch connections (plus one reader)."""
    import psycopg

    kw: dict[str, object] = {"wallet_batch_ops_max": 3}
    if deployment == "production":
        kw.update(production_kwargs(), wallet_committers=3)
        pg_url = str(kw["postgres"])
    else:
        kw["path"] = db_path

    def wallet_conns() -> int:
        with psycopg.connect(pg_url, autocommit=True) as c:
            row = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'couponcore-wallet'"
            ).fetchone()
            assert row is not None
            return int(row[0])

    before = wallet_conns() if deployment == "production" else 0
    tag = time.time_ns()
    with couponcore.open(**kw) as e:  # type: ignore[arg-type]
        p = e.points
        users = [f"opt{i}-{tag}" for i in range(8)]
        for u in users:
            p.earn(u, 10_000, idempotency_key=f"seed-{u}")
        if deployment == "production":
            assert wallet_conns() - before == 3 + 1

        def worker(t: int) -> None:
            for i in range(40):
                p.use(users[(t + i) % len(users)], 1, idempotency_key=f"{tag}-{t}-{i}")

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        k = p.counters()
        assert 1 <= k["max_batch_ops"] <= 3, k
        assert k["ops"] == len(users) + 32 * 40 and k["ops_failed"] == 0
        assert sum(p.balance(u).total for u in users) == len(users) * 10_000 - 32 * 40
        assert p.audit()["ok"]


def test_bad_or_misspelt_open_options_are_refused(db_path: str) -> None:
    """Every option is checked when the engine opens, by name and type; nothing is created."""
    kw = production_kwargs()
    refused: list[tuple[dict[str, object], type[BaseException], str]] = [
        ({**kw, "writer_thredas": 3}, couponcore.InvalidArgument, "writer_thredas"),
        ({**kw, "answer_ttl_s": True}, couponcore.InvalidType, "answer_ttl_s"),
        ({**kw, "gate_batch_requests_max": -1}, couponcore.InvalidArgument, "gate_batch_requests_max"),
        ({**kw, "client_name": 5}, couponcore.InvalidType, "client_name"),
        ({**kw, "wallet_batch_ops_max": 0}, couponcore.InvalidArgument, "batch_ops_max"),
        ({**kw, "wallet_batch_ops_max": "8"}, couponcore.InvalidType, "wallet_batch_ops_max"),
        ({**kw, "wallet_committers": 99}, couponcore.InvalidArgument, "committers"),
        ({**kw, "wallet_retry_budget_ms": -1}, couponcore.InvalidArgument, "retry_budget_ms"),
        ({**kw, "wallet_comitters": 2}, couponcore.InvalidArgument, "wallet_comitters"),
        ({"path": db_path, "wallet_committers": 2}, couponcore.InvalidArgument, "one writer"),
        ({"path": db_path, "wallet_queue_ops_max": 0}, couponcore.InvalidArgument, "queue_ops_max"),
        ({"path": db_path, "writer_threads": 1, "gate_retries_max": 1}, couponcore.InvalidArgument, "gate_retries_max"),
    ]
    for options, error, words in refused:
        with pytest.raises(error, match=words):
            couponcore.open(**options)  # type: ignore[arg-type]
    assert not os.path.exists(db_path)  # no embedded open got as far as the file
    with pytest.raises(couponcore.InvalidArgument, match="threds"):
        couponcore._core.Worker({"redis_url": kw["redis"], "postgres_url": kw["postgres"], "threds": 2})
    # The options that are right still open.
    with couponcore.open(**kw, gate_retries_max=1, wallet_queue_ops_max=50) as e:
        e.points.earn(f"ok-{time.time_ns()}", 5, idempotency_key=f"ok-{time.time_ns()}")
