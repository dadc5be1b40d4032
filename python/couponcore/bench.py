"""``couponcore bench``: side-by-side benchmarks, each printing one JSON object.

Every benchmark runs couponcore and the baseline a user would otherwise write in the same
process, one after the other, on the same inputs, and reports both rates and their ratio.
Numbers from a shared machine are noisy: compare the ratio, not the absolute rates, between runs.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

from ._engine import Engine, open


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


class _PythonGate:
    """The baseline: what a careful Python developer writes for an embedded FCFS gate — a dict
    of holders and a counter under a lock, grants inserted with sqlite3 executemany and one
    commit per batch (the same durability as couponcore: WAL, synchronous=FULL)."""

    def __init__(self, path: str, quantity: int) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE coupons (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,"
            " user_id TEXT NOT NULL UNIQUE, issued_at REAL NOT NULL)"
        )
        self.quantity = quantity
        self.issued = 0
        self.holders: set[str] = set()
        self.lock = threading.Lock()

    def issue_many(self, user_ids: Sequence[str]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        rows = []
        now = time.time()
        with self.lock:
            for u in user_ids:
                if u in self.holders:
                    out.append(("ALREADY_ISSUED", 0))
                elif self.issued >= self.quantity:
                    out.append(("SOLD_OUT", 0))
                else:
                    self.issued += 1
                    self.holders.add(u)
                    rows.append((self.issued, u, now))
                    out.append(("ISSUED", self.issued))
            if rows:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT INTO coupons(seq, user_id, issued_at) VALUES (?,?,?)", rows)
                self.db.execute("COMMIT")
        return out


def bench_embedded(grants: int = 500_000, batch: int = 10_000, sale_requests: int = 1_000_000) -> dict[str, Any]:
    """Durable grants/s (every request issued) and decisions/s on a flash sale (10,000
    coupons, ``sale_requests`` requests from half as many users), both through issue_many from
    Python, vs the Python + sqlite3 baseline."""
    users = [f"user-{i:08d}" for i in range(grants)]
    batches = [users[i : i + batch] for i in range(0, grants, batch)]
    sale_users = [f"buyer-{i % (sale_requests // 2):08d}" for i in range(sale_requests)]
    sale_batches = [sale_users[i : i + batch] for i in range(0, sale_requests, batch)]
    out: dict[str, Any] = {"benchmark": "embedded", "grants": grants, "batch": batch, "sale_requests": sale_requests}
    with tempfile.TemporaryDirectory(prefix="couponcore-bench-") as d:
        with open(os.path.join(d, "ours.db")) as e:
            c = e.campaigns.create("bench", quantity=10**9)
            n, t = _timed(lambda: sum(sum(r.issued for r in e.issue_many(c.id, b)) for b in batches))
            assert n == grants
            out["ours_grants_per_s"] = round(grants / t)
            s = e.campaigns.create("sale", quantity=10_000)
            n, t = _timed(lambda: sum(len(e.issue_many(s.id, b)) for b in sale_batches))
            out["ours_decisions_per_s"] = round(sale_requests / t)
            assert e.stats(s.id).rows == 10_000
        base = _PythonGate(os.path.join(d, "base.db"), 10**9)
        n, t = _timed(lambda: sum(sum(x[0] == "ISSUED" for x in base.issue_many(b)) for b in batches))
        assert n == grants
        out["baseline_grants_per_s"] = round(grants / t)
        sale = _PythonGate(os.path.join(d, "sale.db"), 10_000)
        n, t = _timed(lambda: sum(len(sale.issue_many(b)) for b in sale_batches))
        out["baseline_decisions_per_s"] = round(sale_requests / t)
    out["ours_per_s"] = out["ours_decisions_per_s"]
    out["baseline_per_s"] = out["baseline_decisions_per_s"]
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    out["grants_ratio"] = round(out["ours_grants_per_s"] / out["baseline_grants_per_s"], 2)
    return out


def _threaded(n_threads: int, per_thread: int, call: Callable[[str], Any]) -> float:
    """Run ``call(user_id)`` per_thread times in each of n_threads threads; return seconds."""
    barrier = threading.Barrier(n_threads + 1)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            call(f"t{t:03d}-u{i:07d}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - t0


def bench_embedded_threads(
    threads: int = 64, ours_per_thread: int = 1500, baseline_per_thread: int = 150
) -> dict[str, Any]:
    """Durable grants/s with ``threads`` Python threads each issuing one request at a time:
    couponcore's group commit vs the baseline gate committing each request (same durability)."""
    out: dict[str, Any] = {"benchmark": "embedded-threads", "threads": threads}
    with tempfile.TemporaryDirectory(prefix="couponcore-bench-") as d:
        with open(os.path.join(d, "ours.db")) as e:
            c = e.campaigns.create("bench", quantity=10**9)
            t = _threaded(threads, ours_per_thread, lambda u: e.issue(c.id, u))
            assert e.stats(c.id).rows == threads * ours_per_thread
            out["ours_per_s"] = round(threads * ours_per_thread / t)
            out["ours_commits"] = e.counters()["commits"]
        base = _PythonGate(os.path.join(d, "base.db"), 10**9)
        t = _threaded(threads, baseline_per_thread, lambda u: base.issue_many([u]))
        out["baseline_per_s"] = round(threads * baseline_per_thread / t)
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    return out


def _bench_servers() -> dict[str, str]:
    """Servers for the production benchmarks: COUPONCORE_BENCH_REDIS_URL / _POSTGRES_URL, else
    the test run's (make bench sets them), else the local defaults."""
    redis_url = os.environ.get("COUPONCORE_BENCH_REDIS_URL") or os.environ.get(
        "COUPONCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"
    )
    pg = os.environ.get("COUPONCORE_BENCH_POSTGRES_URL") or os.environ.get("COUPONCORE_TEST_POSTGRES_URL")
    if not pg:
        raise SystemExit("couponcore bench: set COUPONCORE_BENCH_POSTGRES_URL (a database the benchmark may write)")
    return {"redis": redis_url, "postgres": pg, "key_prefix": f"ccbench:{os.getpid()}:{time.time_ns()}:"}


def _cleanup_prefix(redis_url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        r.unlink(*keys[i : i + 500])  # non-blocking: a benchmark's streams are large


_GATE_LUA = """
local quantity = tonumber(redis.call('HGET', KEYS[1], 'quantity'))
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {2, 0} end
local issued = tonumber(redis.call('HGET', KEYS[1], 'issued') or '0')
if issued >= quantity then return {1, 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'issued', 1)
redis.call('HSET', KEYS[2], ARGV[1], 1)
redis.call('XADD', KEYS[3], '*', 'c', ARGV[2], 's', seq, 'u', ARGV[1], 'o', 1, 't', ARGV[3])
return {0, seq}
"""


def batched_ceiling(e: Engine, tag: str, requests: int, traced: bool = False) -> float:
    """Decisions/s of 4 threads calling issue_many with 2,000 new users at a time (every request a
    new grant) on a new campaign; traced: each request with its own traceparent (distinct trace
    and parent ids, made before the clock starts)."""
    c = e.campaigns.create(f"bench-ceiling-{tag}", quantity=10**8)
    per = requests // 4
    batches = [[f"{tag}{t}-{i}" for i in range(j, j + 2000)] for t in range(4) for j in range(0, per, 2000)]
    tps: list[Any] = [None] * len(batches)
    if traced:
        tps = [[f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01" for _ in b] for b in batches]
    barrier = threading.Barrier(4)

    def batched(tid: int) -> None:
        barrier.wait()
        for k in range(tid, len(batches), 4):
            e.issue_many(c.id, batches[k], traceparent=tps[k])

    ts = [threading.Thread(target=batched, args=(i,)) for i in range(4)]
    t0 = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return requests / (time.perf_counter() - t0)


def bench_gate(threads: int = 64, per_thread: int = 400, ceiling_requests: int = 400_000) -> dict[str, Any]:
    """Production gate decisions/s: 64 Python threads each issuing one request at a time,
    couponcore (coalesced into batched Lua calls) vs redis-py running an equivalent FCFS Lua
    script (check holder, count, record, XADD the grant) once per request from 64 threads.
    Also the engine's ceiling with batched callers (issue_many of 2,000 from 4 threads, every
    request a new grant): of the gate alone (writers elsewhere, as with `couponcore worker`
    processes: the grants wait in the stream) and with the engine's own writers draining into
    PostgreSQL on the same two cores."""
    import redis

    srv = _bench_servers()
    out: dict[str, Any] = {"benchmark": "gate", "threads": threads, "requests": threads * per_thread}

    def ceiling(e: Engine, tag: str) -> int:
        return round(batched_ceiling(e, tag, ceiling_requests))

    try:
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"], writer_threads=0) as g:
            out["ceiling_per_s"] = ceiling(g, "g")
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"]) as e:
            assert e.drain(300)  # the gate-only run's grants, before anything else is measured
            c = e.campaigns.create("bench-gate", quantity=10**8)
            t = _threaded(threads, per_thread, lambda u: e.issue(c.id, u))
            out["ours_per_s"] = round(threads * per_thread / t)
            k = e.counters()
            out["ours_requests_per_lua_call"] = round(k["requests"] / max(1, k["batches"]), 1)
            out["ceiling_with_writers_per_s"] = ceiling(e, "w")
            assert e.drain(300)
        r = redis.Redis.from_url(srv["redis"], max_connections=threads + 8)
        script = r.register_script(_GATE_LUA)
        tag = f"{srv['key_prefix']}base{{c1}}"
        r.hset(f"{tag}:m", mapping={"quantity": 10**8, "issued": 0})

        def base_issue(u: str) -> None:
            script(keys=[f"{tag}:m", f"{tag}:h", f"{tag}:g"], args=[u, 1, int(time.time() * 1e6)])

        t = _threaded(threads, per_thread, base_issue)
        out["baseline_per_s"] = round(threads * per_thread / t)
        assert int(r.hget(f"{tag}:m", "issued") or 0) == threads * per_thread
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    return out


_NARROW_DDL = (
    "(campaign_id bigint NOT NULL, seq bigint NOT NULL, user_id text NOT NULL, user_ordinal int NOT NULL,"
    " issued_at_us bigint NOT NULL, PRIMARY KEY (campaign_id, seq), UNIQUE (campaign_id, user_id, user_ordinal))"
)


def bench_writer(grants: int = 200_000) -> dict[str, Any]:
    """Grants/s from the grant stream into PostgreSQL: couponcore's writer (2 threads, draining a
    backlog of ``grants``) vs psycopg ``executemany`` of the same rows into a table shaped like
    ours, with psql ``\\copy`` of the same rows into such a table as the physical reference (and
    into a bare two-index table, and one round trip per row on a sample, for context)."""
    import subprocess
    import tempfile as _tf

    import psycopg

    from . import _core

    srv = _bench_servers()
    out: dict[str, Any] = {"benchmark": "writer", "grants": grants}
    try:
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"], writer_threads=0) as e:
            c = e.campaigns.create("bench-writer", quantity=grants)
            for j in range(0, grants, 10_000):
                e.issue_many(c.id, [f"w-{i:08d}" for i in range(j, min(grants, j + 10_000))])
            worker = _core.Worker(
                {
                    "redis_url": srv["redis"],
                    "postgres_url": srv["postgres"],
                    "key_prefix": srv["key_prefix"],
                    "threads": 2,
                    "migrate_on_start": False,
                }
            )
            t0 = time.perf_counter()
            worker.start()
            assert e.drain(600)
            t = time.perf_counter() - t0
            worker.stop()
            worker.join(30)
            assert e.stats(c.id).rows == grants
            out["ours_per_s"] = round(grants / t)
            campaign_id = c.id
        # The baselines write the same rows into tables shaped like ours: `LIKE coupons INCLUDING
        # ALL` (the same columns, checks and five indexes) plus the same foreign key to campaigns.
        # `\\copy` into a bare two-index table is reported too (copy_narrow_per_s): it is the
        # physical ceiling of the disk, not the same job.
        rows = [(campaign_id, i + 1, f"w-{i:08d}", 1, 1_700_000_000_000_000) for i in range(grants)]
        shaped = "(LIKE coupons INCLUDING ALL, FOREIGN KEY (campaign_id) REFERENCES campaigns (id))"
        with psycopg.connect(srv["postgres"]) as conn:
            for t in ("bench_executemany", "bench_row_at_a_time", "bench_copy", "bench_copy_narrow"):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
                conn.execute(f"CREATE TABLE {t} " + (shaped if t != "bench_copy_narrow" else _NARROW_DDL))
            conn.commit()
            insert = (
                "INSERT INTO {} (id, campaign_id, seq, user_id, user_ordinal, issued_at_us)"
                " VALUES ((%s::bigint << 32) | %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            )
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                for j in range(0, grants, 2000):  # the same batch size as our writer
                    cur.executemany(insert.format("bench_executemany"), [(r[0], r[1], *r) for r in rows[j : j + 2000]])
                    conn.commit()
            out["baseline_per_s"] = round(grants / (time.perf_counter() - t0))
            # One statement and one round trip per row, a commit per 2,000: psycopg 2's
            # executemany, or JDBC without batching. A 20,000-row sample (it is slow).
            sample = rows[:20_000]
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                for j in range(0, len(sample), 2000):
                    for r in sample[j : j + 2000]:
                        cur.execute(insert.format("bench_row_at_a_time"), (r[0], r[1], *r))
                    conn.commit()
            out["row_at_a_time_per_s"] = round(len(sample) / (time.perf_counter() - t0))
        with _tf.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            for r in rows:
                f.write(f"{(r[0] << 32) | r[1]},{r[0]},{r[1]},{r[2]},{r[3]},,{r[4]},\n")
            csv_path = f.name
        with _tf.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            for r in rows:
                f.write(",".join(map(str, r)) + "\n")
            narrow_path = f.name
        copy_cols = "(id, campaign_id, seq, user_id, user_ordinal, request_id, issued_at_us, valid_until_us)"
        for key, table, path in (
            ("copy_per_s", f"bench_copy {copy_cols}", csv_path),
            ("copy_narrow_per_s", "bench_copy_narrow", narrow_path),
        ):
            t0 = time.perf_counter()
            subprocess.run(["psql", srv["postgres"], "-q", "-c", f"\\copy {table} FROM '{path}' CSV"], check=True)
            out[key] = round(grants / (time.perf_counter() - t0))
            os.unlink(path)
        with psycopg.connect(srv["postgres"]) as conn:
            for t in ("bench_executemany", "bench_row_at_a_time", "bench_copy", "bench_copy_narrow"):
                conn.execute(f"DROP TABLE {t}")
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    out["ratio_to_copy"] = round(out["ours_per_s"] / out["copy_per_s"], 2)
    out["ratio_to_row_at_a_time"] = round(out["ours_per_s"] / out["row_at_a_time_per_s"], 2)
    out["ratio_to_copy_narrow"] = round(out["ours_per_s"] / out["copy_narrow_per_s"], 2)
    out["published_reference_ms"] = {"JPA saveAll 100k": 53_254, "JdbcTemplate.batchUpdate 100k": 3_640}
    return out


_USE_SELECT = """
SELECT k.user_id, k.state, k.valid_until_us, c.discount_kind, c.discount_value, c.discount_max,
       c.min_order_amount
FROM coupons k JOIN campaigns c ON c.id = k.campaign_id WHERE k.id = %s FOR UPDATE OF k
"""
_USE_UPDATE = """
UPDATE coupons SET state = 1, used_order_id = %s, used_at_us = %s, used_amount = %s,
       discount_amount = %s, state_changed_at_us = %s WHERE id = %s
"""


def _baseline_use(conn: Any, coupon_id: int, user_id: str, order_id: str, amount: int) -> int:
    """The checkout a team writes with psycopg: lock the row, check it in Python, update, commit."""
    now = time.time_ns() // 1000
    with conn.transaction():
        row = conn.execute(_USE_SELECT, (coupon_id,)).fetchone()
        if row is None or row[0] != user_id:
            raise LookupError("coupon not found")
        _, state, valid_until, kind, value, cap, min_order = row
        if state != 0 or (valid_until is not None and valid_until <= now):
            raise RuntimeError("coupon not usable")
        if amount < min_order:
            raise ValueError("below the minimum order")
        discount = value if kind == 1 else (amount * value // 100 if kind == 2 else 0)
        if kind == 2 and cap is not None:
            discount = min(discount, cap)
        discount = min(discount, amount)
        conn.execute(_USE_UPDATE, (order_id, now, amount, discount, now, coupon_id))
    return discount


def bench_use(threads: int = 16, per_thread: int = 300) -> dict[str, Any]:
    """Coupon uses/s against PostgreSQL with ``threads`` concurrent checkouts, each use on its
    own coupon: couponcore (``coupons.use``: a read, then one conditional UPDATE in autocommit)
    vs psycopg running the usual ``SELECT ... FOR UPDATE`` / ``UPDATE`` / ``COMMIT`` per use from
    as many threads, each with its own connection. Same tables, same rules, same amounts."""
    import psycopg

    srv = _bench_servers()
    n = threads * per_thread
    out: dict[str, Any] = {"benchmark": "use", "threads": threads, "uses": n}
    users = [f"t{t:03d}-u{i:07d}" for t in range(threads) for i in range(per_thread)]
    terms = {"discount_kind": "percent", "discount_value": 10, "discount_max": 5_000}
    try:
        with open(
            redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"], lifecycle_conns_max=threads
        ) as e:
            ours = e.campaigns.create("bench-use", quantity=n, **terms)
            theirs = e.campaigns.create("bench-use-baseline", quantity=n, **terms)
            ids_ours = dict(zip(users, (r.coupon_id for r in e.issue_many(ours.id, users))))
            ids_theirs = dict(zip(users, (r.coupon_id for r in e.issue_many(theirs.id, users))))
            assert e.drain(120)
            t = _threaded(threads, per_thread, lambda u: e.coupons.use(ids_ours[u], u, "o-" + u, 20_000))
            out["ours_per_s"] = round(n / t)
            assert e.coupons.counts(ours.id).used == n
            conns = [psycopg.connect(srv["postgres"]) for _ in range(threads)]
            local = threading.local()
            slots = iter(range(threads))
            lock = threading.Lock()

            def base(u: str) -> None:
                if not hasattr(local, "conn"):
                    with lock:
                        local.conn = conns[next(slots)]
                _baseline_use(local.conn, ids_theirs[u], u, "o-" + u, 20_000)

            t = _threaded(threads, per_thread, base)
            out["baseline_per_s"] = round(n / t)
            for c in conns:
                c.close()
            assert e.coupons.counts(theirs.id).used == n
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    return out


_SAME_MODEL_TABLES = ("bench_sm_idempotency", "bench_sm_draws", "bench_sm_entries", "bench_sm_lots", "bench_sm_wallets")


def _same_model_baseline(url: str, threads: int, ops_per_thread: int, wallets: int) -> int:
    """Uses/s of one psycopg transaction per use that keeps the engine's data: lock the wallet,
    read its idempotency record and its lots (first-expiring-first), update the lot, insert the
    ledger entry, the draw and the idempotency record, update the balance, COMMIT. Uniform over
    ``wallets`` wallets with one lot each, as the engine's run."""
    import random as _random

    import psycopg

    drop = "DROP TABLE IF EXISTS " + ", ".join(_SAME_MODEL_TABLES)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(
            "CREATE TABLE bench_sm_wallets (id bigserial PRIMARY KEY, user_id text UNIQUE NOT NULL,"
            " balance bigint NOT NULL CHECK (balance >= 0));"
            "CREATE TABLE bench_sm_lots (id bigserial PRIMARY KEY, wallet_id bigint NOT NULL, amount bigint NOT NULL,"
            " remaining bigint NOT NULL CHECK (remaining >= 0), expires_at timestamptz);"
            "CREATE INDEX ON bench_sm_lots(wallet_id) WHERE remaining > 0;"
            "CREATE TABLE bench_sm_entries (id bigserial PRIMARY KEY, wallet_id bigint NOT NULL,"
            " amount bigint NOT NULL, balance_after bigint NOT NULL, idempotency_key text,"
            " created_at timestamptz NOT NULL DEFAULT now());"
            "CREATE INDEX ON bench_sm_entries(wallet_id, id);"
            "CREATE TABLE bench_sm_draws (entry_id bigint NOT NULL, lot_id bigint NOT NULL, amount bigint NOT NULL,"
            " PRIMARY KEY (entry_id, lot_id));"
            "CREATE TABLE bench_sm_idempotency (idempotency_key text PRIMARY KEY, entry_id bigint NOT NULL,"
            " balance_after bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO bench_sm_wallets(user_id, balance) SELECT 'w' || g, 1000000 FROM generate_series(0, %s) g",
            (wallets - 1,),
        )
        conn.execute(
            "INSERT INTO bench_sm_lots(wallet_id, amount, remaining) SELECT id, 1000000, 1000000 FROM bench_sm_wallets"
        )
    local = threading.local()
    rngs = [_random.Random(i) for i in range(threads)]
    counter = iter(range(10**12))

    def op(u: str) -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(url)
        c = local.conn
        user = f"w{rngs[int(u[1:4])].randrange(wallets)}"
        key = f"sm-{next(counter)}"
        with c.transaction():
            wid, bal = c.execute(
                "SELECT id, balance FROM bench_sm_wallets WHERE user_id = %s FOR UPDATE", (user,)
            ).fetchone()
            if c.execute("SELECT entry_id FROM bench_sm_idempotency WHERE idempotency_key = %s", (key,)).fetchone():
                return
            lots = c.execute(
                "SELECT id, remaining FROM bench_sm_lots WHERE wallet_id = %s AND remaining > 0"
                " ORDER BY expires_at NULLS LAST, id",
                (wid,),
            ).fetchall()
            lot_id = lots[0][0]
            c.execute("UPDATE bench_sm_lots SET remaining = remaining - 1 WHERE id = %s", (lot_id,))
            (entry_id,) = c.execute(
                "INSERT INTO bench_sm_entries(wallet_id, amount, balance_after, idempotency_key)"
                " VALUES (%s, -1, %s, %s) RETURNING id",
                (wid, bal - 1, key),
            ).fetchone()
            c.execute("INSERT INTO bench_sm_draws VALUES (%s, %s, 1)", (entry_id, lot_id))
            c.execute(
                "INSERT INTO bench_sm_idempotency(idempotency_key, entry_id, balance_after) VALUES (%s, %s, %s)",
                (key, entry_id, bal - 1),
            )
            c.execute("UPDATE bench_sm_wallets SET balance = balance - 1 WHERE id = %s", (wid,))

    secs = _threaded(threads, ops_per_thread, op)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(drop)
    return round(threads * ops_per_thread / secs)


def bench_wallet(threads: int = 64, ops_per_thread: int = 150, wallets: int = 10_000) -> dict[str, Any]:
    """Wallet uses/s with ``threads`` concurrent callers, every use committed before it is
    answered: couponcore's batched wallet engine vs one transaction per operation with psycopg
    (SELECT … FOR UPDATE, UPDATE, INSERT into a ledger, COMMIT), on (a) ``wallets`` wallets
    uniformly and (b) one hot wallet.

    The issue's baseline keeps a balance and a ledger only. A second baseline, uniform only,
    keeps what the engine keeps, one transaction per use: lots drawn first-expiring-first, a
    draw record per lot, an idempotency record (``baseline_same_model_uniform_per_s``)."""
    import random as _random

    import psycopg

    srv = _bench_servers()
    tag = f"b{time.time_ns()}"
    out: dict[str, Any] = {
        "benchmark": "wallet",
        "threads": threads,
        "ops_per_thread": ops_per_thread,
        "wallets": wallets,
    }
    with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"]) as e:
        p = e.points
        names = [f"{tag}-w{i}" for i in range(wallets)]
        hot = f"{tag}-hot"
        seed_threads = [
            threading.Thread(
                target=lambda ch: [p.earn(n, 10**6, idempotency_key=f"seed-{n}") for n in ch], args=(names[i::16],)
            )
            for i in range(16)
        ]
        for th in seed_threads:
            th.start()
        for th in seed_threads:
            th.join()
        p.earn(hot, 10**9, idempotency_key=f"seed-{hot}")
        for case, pick in (("uniform", lambda rng: rng.choice(names)), ("hot", lambda rng: hot)):
            rngs = [_random.Random(i) for i in range(threads)]
            counter = iter(range(10**12))

            def op(u: str, case: str = case, pick: Any = pick, rngs: Any = rngs, counter: Any = counter) -> None:
                t = int(u[1:4])
                p.use(pick(rngs[t]), 1, idempotency_key=f"{tag}-{case}-{next(counter)}")

            secs = _threaded(threads, ops_per_thread, op)
            out[f"ours_{case}_per_s"] = round(threads * ops_per_thread / secs)
        assert e.points.audit()["ok"]
    with psycopg.connect(srv["postgres"], autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ledger; DROP TABLE IF EXISTS bench_wallets")
        conn.execute(
            "CREATE TABLE bench_wallets (id bigserial PRIMARY KEY, user_id text UNIQUE NOT NULL,"
            " balance bigint NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE bench_ledger (id bigserial PRIMARY KEY, wallet_id bigint NOT NULL, amount bigint NOT NULL,"
            " idempotency_key text UNIQUE NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_wallets(user_id, balance) VALUES (%s, %s)",
                [(n, 10**6) for n in [f"w{i}" for i in range(wallets)]] + [("hot", 10**9)],
            )
    local = threading.local()
    for case in ("uniform", "hot"):
        counter = iter(range(10**12))
        rngs = [_random.Random(i) for i in range(threads)]

        def base_op(u: str, case: str = case, rngs: Any = rngs, counter: Any = counter) -> None:
            if not hasattr(local, "conn"):
                local.conn = psycopg.connect(srv["postgres"])
            t = int(u[1:4])
            user = "hot" if case == "hot" else f"w{rngs[t].randrange(wallets)}"
            key = f"{case}-{next(counter)}"
            with local.conn.transaction():
                wid, bal = local.conn.execute(
                    "SELECT id, balance FROM bench_wallets WHERE user_id = %s FOR UPDATE", (user,)
                ).fetchone()
                if bal < 1:
                    raise RuntimeError("insufficient")
                local.conn.execute("UPDATE bench_wallets SET balance = balance - 1 WHERE id = %s", (wid,))
                local.conn.execute(
                    "INSERT INTO bench_ledger(wallet_id, amount, idempotency_key) VALUES (%s, -1, %s)", (wid, key)
                )

        secs = _threaded(threads, ops_per_thread, base_op)
        out[f"baseline_{case}_per_s"] = round(threads * ops_per_thread / secs)
    with psycopg.connect(srv["postgres"], autocommit=True) as conn:
        conn.execute("DROP TABLE bench_ledger; DROP TABLE bench_wallets")
    out["baseline_same_model_uniform_per_s"] = _same_model_baseline(srv["postgres"], threads, ops_per_thread, wallets)
    out["ratio_same_model_uniform"] = round(out["ours_uniform_per_s"] / out["baseline_same_model_uniform_per_s"], 2)
    out["ratio_uniform"] = round(out["ours_uniform_per_s"] / out["baseline_uniform_per_s"], 2)
    out["ratio_hot"] = round(out["ours_hot_per_s"] / out["baseline_hot_per_s"], 2)
    out["ours_per_s"], out["baseline_per_s"], out["ratio"] = (
        out["ours_uniform_per_s"],
        out["baseline_uniform_per_s"],
        out["ratio_uniform"],
    )
    return out


def bench_http(**kwargs: Any) -> dict[str, Any]:
    from ._bench_http import bench_http as run

    return run(**kwargs)


def bench_cluster(**kwargs: Any) -> dict[str, Any]:
    from ._bench_cluster import bench_cluster as run

    return run(**kwargs)


def bench_shards(**kwargs: Any) -> dict[str, Any]:
    from ._bench_shards import bench_shards as run

    return run(**kwargs)


def bench_tracing(**kwargs: Any) -> dict[str, Any]:
    from ._bench_tracing import bench_tracing as run

    return run(**kwargs)


def bench_replicas(**kwargs: Any) -> dict[str, Any]:
    from ._bench_replicas import bench_replicas as run

    return run(**kwargs)


def bench_ratelimit(**kwargs: Any) -> dict[str, Any]:
    from ._bench_ratelimit import bench_ratelimit as run

    return run(**kwargs)


def bench_events(**kwargs: Any) -> dict[str, Any]:
    from ._bench_events import bench_events as run

    return run(**kwargs)


def _shard_of(user: str, shards: int) -> int:
    """The core's routing of a user to a shard (redis::shard_of_user): FNV-1a 64 modulo shards."""
    h = 1469598103934665603
    for b in user.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def bench_reconcile(**kwargs: Any) -> dict[str, Any]:
    from ._bench_reconcile import bench_reconcile as run

    return run(**kwargs)


def bench_bulk(**kwargs: Any) -> dict[str, Any]:
    from ._bench_bulk import bench_bulk as run

    return run(**kwargs)


def bench_windows(**kwargs: Any) -> dict[str, Any]:
    from ._bench_windows import bench_windows as run

    return run(**kwargs)


def bench_connect(**kwargs: Any) -> dict[str, Any]:
    from ._bench_connect import bench_connect as run

    return run(**kwargs)


def bench_decode(**kwargs: Any) -> dict[str, Any]:
    from ._bench_decode import bench_decode as run

    return run(**kwargs)


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "embedded": bench_embedded,
    "embedded-threads": bench_embedded_threads,
    "gate": bench_gate,
    "use": bench_use,
    "writer": bench_writer,
    "http": bench_http,
    "wallet": bench_wallet,
    "reconcile": bench_reconcile,
    "bulk": bench_bulk,
    "cluster": bench_cluster,
    "shards": bench_shards,
    "replicas": bench_replicas,
    "windows": bench_windows,
    "tracing": bench_tracing,
    "ratelimit": bench_ratelimit,
    "events": bench_events,
    "decode": bench_decode,
    "connect": bench_connect,
}
