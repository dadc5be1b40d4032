"""Bulk grants (couponcore.bulk): exact counts in the store, per-row errors, sold-out rows
refused, resume without a double grant (an interrupted chunk, a SIGKILLed process), the rate cap
and the writers' backlog bound, CSV / Parquet / SQL sources. Both deployments where it applies:
the store is read directly (SQLite file, PostgreSQL) to count rows per user."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import couponcore
import psycopg
import pytest
from conftest import env_url, production_kwargs
from couponcore import bulk

# ---------------------------------------------------------------------------------------------
# Helpers: read the store behind an engine


def _query(engine: couponcore.Engine, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    kind, where = engine._store
    assert where is not None
    if kind == "postgres":
        with psycopg.connect(where) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
    conn = sqlite3.connect(where)
    try:
        rows = conn.execute(sql.replace("%s", "?"), params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def coupons_per_user(engine: couponcore.Engine, campaign_id: int) -> dict[str, int]:
    assert engine.drain(60.0), "grants did not reach the store within 60 s"
    rows = _query(
        engine, "SELECT user_id, count(*) FROM coupons WHERE campaign_id = %s GROUP BY user_id", (campaign_id,)
    )
    return {u: int(n) for u, n in rows}


def max_in(engine: couponcore.Engine, select: str, values: list[str]) -> int:
    """``select`` ends with ``... IN``: the values are appended as parameters."""
    (top,) = _query(engine, f"{select} ({', '.join(['%s'] * len(values))})", tuple(values))[0]
    return int(top)


def rewind_last_chunk(
    engine: couponcore.Engine,
    job_key: str,
    rows: int,
    granted: int,
    already: int = 0,
    bad: int = 0,
    max_id: int = 0,
    checkpoint_at_us: int = 0,
) -> None:
    """Puts the job's checkpoint back by one chunk (its rows, their counts; the highest coupon
    seq granted and the checkpoint's time before it): as if the process had died after granting
    its last chunk and before committing that chunk's checkpoint."""
    _query(
        engine,
        "UPDATE bulk_jobs SET rows_done = rows_done - %s, chunks_done = chunks_done - 1, granted = granted - %s,"
        " already_granted = already_granted - %s, bad_rows = bad_rows - %s, max_id = %s, updated_at_us = %s,"
        " state = 'running' WHERE job_key = %s",
        (rows, granted, already, bad, max_id, checkpoint_at_us, job_key),
    )


class Deployment:
    """Opens this test's deployment as often as the test likes: the same SQLite file, or the
    same servers and Redis key prefix (``where``: couponcore.open's arguments)."""

    def __init__(self, kind: str, where: dict[str, Any]) -> None:
        self.kind, self.where = kind, where

    def __call__(self, **options: Any) -> couponcore.Engine:
        return couponcore.open(**self.where, **options)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, db_path: str) -> Deployment:
    kind = request.param
    return Deployment(kind, {"path": db_path} if kind == "embedded" else production_kwargs())


both = pytest.mark.parametrize("deployment", ["embedded", "production"], indirect=True)


# ---------------------------------------------------------------------------------------------
# Coupons


@both
def test_coupons_to_a_list_exact_counts_bad_rows_and_a_rerun_grants_nobody(
    deployment: Deployment,
) -> None:
    users: list[Any] = [f"u{i}" for i in range(2_500)]
    # Bad rows among them (1-based row numbers after the 2,500 good ones), and a duplicate.
    users += ["", "x" * 129, "has space", "naïve", 42, None, "u7"]
    progress: list[tuple[int, int | None]] = []
    with deployment() as e:
        c = e.campaigns.create("bulk", quantity=10_000)
        e.issue(c.id, "u3")  # u3 already holds one: ALREADY_ISSUED for the bulk row
        r = bulk.grant_coupons(
            e, c.id, users, job_key="job-1", chunk_size=400, on_progress=lambda d, t: progress.append((d, t))
        )
        assert (r.granted, r.already_granted, r.refused, r.bad_row_count) == (2_499, 2, 0, 6)
        assert r.rows == len(users) and r.chunks == 7 and r.resumed_from == 0 and r.done
        assert [(b.row, b.value) for b in r.bad_rows] == [
            (2_501, ""),
            (2_502, "x" * 129),
            (2_503, "has space"),
            (2_504, "naïve"),
            (2_505, "42"),
            (2_506, "None"),
        ]
        assert "empty" in r.bad_rows[0].error and "longer than 128" in r.bad_rows[1].error
        assert "must be a str" in r.bad_rows[4].error
        assert progress[-1] == (len(users), len(users)) and len(progress) == 7
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == 2_500 and set(per_user.values()) == {1}
        (n,) = _query(e, "SELECT count(*) FROM coupons WHERE campaign_id = %s AND request_id = 'bulk:job-1'", (c.id,))[
            0
        ]
        assert n == r.granted
        # The same job again: finished, nothing granted, the same result.
        again = bulk.grant_coupons(e, c.id, users, job_key="job-1", chunk_size=400)
        assert (again.granted, again.already_granted, again.bad_row_count, again.resumed_from) == (
            2_499,
            2,
            6,
            len(users),
        )
        assert coupons_per_user(e, c.id) == per_user


@both
def test_a_campaign_that_sells_out_refuses_the_remaining_rows(deployment: Deployment) -> None:
    with deployment() as e:
        c = e.campaigns.create("small", quantity=300)
        r = bulk.grant_coupons(e, c.id, (f"s{i}" for i in range(1_000)), job_key="sellout", chunk_size=128)
        assert (r.granted, r.refused, r.refused_reasons) == (300, 700, {"sold_out": 700})
        assert r.rows == 1_000 and r.bad_row_count == 0
        assert sorted(coupons_per_user(e, c.id)) == sorted(f"s{i}" for i in range(300))


@both
def test_resumed_chunk_is_checked_in_the_store_when_the_gate_would_grant_again(
    deployment: Deployment,
) -> None:
    """per_user_limit 3: the production gate alone would grant a second coupon once its
    request-id answers are gone (answer_ttl_s = 1 s, then 2 s waited; the embedded gate restores
    them from the file, and the lookup agrees with it). The checkpoint is rewound by one chunk, as
    a process killed between a chunk's grants and its checkpoint leaves it; the resumed run finds
    the chunk's users in the store."""
    users = [f"r{i}" for i in range(1_000)] + ["r5"]  # r5 again in the last chunk: one coupon
    opts: dict[str, Any] = {} if deployment.kind == "embedded" else {"answer_ttl_s": 1}
    with deployment(**opts) as e:
        c = e.campaigns.create("limit3", quantity=100_000, per_user_limit=3)
        r = bulk.grant_coupons(e, c.id, users, job_key="resume-1", chunk_size=300)
        assert (r.granted, r.already_granted, r.chunks) == (1_000, 1, 4)
        assert e.drain(30)
        top = max_in(e, "SELECT max(seq) FROM coupons WHERE user_id IN", users[:900])
        rewind_last_chunk(e, "resume-1", rows=101, granted=100, already=1, max_id=top)
    if deployment.kind == "production":
        time.sleep(2.2)  # two answer generations: the gate has forgotten the request ids
    with deployment(**opts) as e:
        r2 = bulk.grant_coupons(e, c.id, users, job_key="resume-1", chunk_size=300)
        assert (r2.resumed_from, r2.granted, r2.already_granted, r2.rows) == (900, 1_000, 1, 1_001)
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == 1_000 and set(per_user.values()) == {1}
        again = e.issue(c.id, "r999", "bulk:resume-1")
        if deployment.kind == "production":
            # Without the store lookup, the gate would have granted again: it does for a plain retry.
            assert again.issued and coupons_per_user(e, c.id)["r999"] == 2
        else:
            # The embedded gate restores its ISSUED answers from the file: a replay, no new coupon.
            assert again.issued and coupons_per_user(e, c.id)["r999"] == 1


def _sigkill_after_a_third(proc: subprocess.Popen[str], n: int) -> int:
    """Reads the child's progress lines until a third of n rows are done, then SIGKILLs it;
    returns the rows it reported done."""
    assert proc.stdout is not None
    done = 0
    deadline = time.monotonic() + 60
    while done < n // 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line and line != "finished\n", "the child ended before it was killed"
        done = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.stdout.close()
    proc.wait()
    return done


@pytest.mark.parametrize("deployment", ["embedded", "production"], indirect=True)
def test_sigkill_mid_run_then_resume_grants_every_user_exactly_once(deployment: Deployment, tmp_path: Path) -> None:
    n = 30_000
    csv_path = tmp_path / "users.csv"
    csv_path.write_text("user_id,segment\n" + "".join(f"k{i},a\n" for i in range(n)))
    kind = deployment.kind
    with deployment() as e:
        c = e.campaigns.create("killed", quantity=1_000_000, per_user_limit=2)
    child = textwrap.dedent(
        """
        import json, sys, couponcore
        from couponcore import bulk
        where, campaign_id, path = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        engine = couponcore.open(**where)
        def progress(done, total):
            print(done, flush=True)
        bulk.grant_coupons(engine, campaign_id, bulk.read_csv(path, "user_id"), job_key="kill-1",
                           chunk_size=500, rows_per_s=15000, on_progress=progress)
        print("finished", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, json.dumps(deployment.where), str(c.id), str(csv_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    done = _sigkill_after_a_third(proc, n)
    assert n // 3 <= done < n

    # Resume; production: a writer that claims the dead process's pending grants quickly.
    opts = {} if kind == "embedded" else {"writer_claim_idle_ms": 500}
    with deployment(**opts) as e:
        st = bulk.status(e, "kill-1")
        assert st is not None and not st.done and done <= st.rows < n  # killed mid-run
        r = bulk.grant_coupons(e, c.id, bulk.read_csv(csv_path, "user_id"), job_key="kill-1", chunk_size=500)
        assert r.resumed_from == st.rows and r.rows == n and r.done
        assert r.granted == n and r.already_granted == 0 and r.bad_row_count == 0
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == n, f"{n - len(per_user)} users have no coupon"
        assert set(per_user.values()) == {1}, "a user was granted twice"


@pytest.mark.parametrize("deployment", ["embedded", "production"], indirect=True)
def test_points_sigkill_mid_run_then_resume_earns_every_user_exactly_once(deployment: Deployment) -> None:
    n = 8_000
    child = textwrap.dedent(
        """
        import json, sys, couponcore
        from couponcore import bulk
        engine = couponcore.open(**json.loads(sys.argv[1]))
        rows = ((f"w{i}", i % 9 + 1) for i in range(int(sys.argv[2])))
        bulk.grant_points(engine, rows, job_key="kill-pts", reason="killed", chunk_size=250, rows_per_s=4000,
                          on_progress=lambda done, total: print(done, flush=True))
        print("finished", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, json.dumps(deployment.where), str(n)], stdout=subprocess.PIPE, text=True
    )
    done = _sigkill_after_a_third(proc, n)
    with deployment() as e:
        st = bulk.status(e, "kill-pts")
        assert st is not None and not st.done and done <= st.rows < n
        rows = ((f"w{i}", i % 9 + 1) for i in range(n))
        r = bulk.grant_points(e, rows, job_key="kill-pts", reason="killed", chunk_size=250)
        assert (r.resumed_from, r.rows, r.granted, r.already_granted) == (st.rows, n, n, 0)
        per_user = dict(
            _query(
                e,
                "SELECT user_id, count(*) FROM wallet_entries e JOIN wallets w ON w.id = e.wallet_id"
                " WHERE e.reason = 'killed' GROUP BY user_id",
            )
        )
        assert len(per_user) == n and set(per_user.values()) == {1}
        assert sum(e.points.balance(f"w{i}").total for i in range(0, n, 97)) == sum(i % 9 + 1 for i in range(0, n, 97))


# ---------------------------------------------------------------------------------------------
# Pacing


def test_rate_limiter_token_bucket_arithmetic() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    lim = bulk.RateLimiter(1_000, clock=lambda: now[0], sleep=sleep)
    assert lim.burst_rows == 100
    assert lim.acquire(100) == 0.0 and not slept  # the burst
    lim.acquire(500)  # 500 rows of debt at 1,000/s: half a second
    assert slept == [pytest.approx(0.5)]
    now[0] += 10  # idle: the bucket refills to its burst, not beyond
    assert lim.acquire(100) == 0.0
    for _ in range(10):
        lim.acquire(100)
    assert lim.sleeps == 11 and lim.slept_s == pytest.approx(1.5)
    with pytest.raises(couponcore.InvalidArgument):
        bulk.RateLimiter(0)
    with pytest.raises(couponcore.InvalidType):
        bulk.RateLimiter("fast")  # type: ignore[arg-type]


def test_rate_cap_engages_and_paces_the_gate_calls(db_path: str) -> None:
    """3,000 rows at 2,000 rows/s: gate calls of 200 rows (a tenth of a second's), the first from
    the bucket's burst, each later one owing a tenth of a second. The limiter's clock is the
    test's: its sleeps move it, and take no time, so the count is exact on any machine."""
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with couponcore.open(db_path) as e:
        c = e.campaigns.create("capped", quantity=100_000)
        limiter = bulk.RateLimiter(2_000, clock=lambda: now[0], sleep=sleep)
        r = bulk.grant_coupons(e, c.id, [f"c{i}" for i in range(3_000)], job_key="cap", rows_per_s=limiter)
        assert r.granted == 3_000
        assert (r.limiter_sleeps, r.limiter_sleep_s) == (14, pytest.approx(1.4))  # (3,000 - 200) / 2,000 s
        assert now[0] == pytest.approx(1.4)
        free = bulk.grant_coupons(e, c.id, [f"f{i}" for i in range(3_000)], job_key="free")
        assert free.granted == 3_000 and free.limiter_sleeps == 0
        # Points are paced the same way; the sold-out rows of a campaign are not charged.
        small = e.campaigns.create("small", quantity=100)
        lim2 = bulk.RateLimiter(2_000, clock=lambda: now[0], sleep=sleep)
        r2 = bulk.grant_coupons(e, small.id, [f"s{i}" for i in range(3_000)], job_key="so", rows_per_s=lim2)
        assert r2.refused == 2_900 and lim2.rows < 3_000
        lim3 = bulk.RateLimiter(2_000, clock=lambda: now[0], sleep=sleep)
        r3 = bulk.grant_points(e, [(f"p{i}", 5) for i in range(1_000)], job_key="pp", reason="", rows_per_s=lim3)
        assert r3.granted == 1_000 and lim3.sleeps == 4 and lim3.rows == 1_000


def test_backlog_bound_stops_a_run_with_no_writer_then_it_resumes() -> None:
    """Production with no writer: the grant log only grows. The run waits at the bound, gives up
    after backlog_wait_s with Unavailable (the log holds at most the bound plus one batch), and
    the same job resumes once a writer runs."""
    kw = production_kwargs()
    users = [f"b{i}" for i in range(2_000)]
    with couponcore.open(**kw, writer_threads=0) as e:
        c = e.campaigns.create("backlog", quantity=100_000)
        with pytest.raises(couponcore.Unavailable, match="writers running"):
            bulk.grant_coupons(e, c.id, users, job_key="bl", chunk_size=100, backlog_entries_max=3, backlog_wait_s=0.5)
        (b,) = [b for b in e.log_backlog() if b.campaign_id == c.id]
        assert 3 < b.entries <= 4
    with couponcore.open(**kw) as e:
        r = bulk.grant_coupons(e, c.id, users, job_key="bl", chunk_size=100, backlog_entries_max=3)
        assert r.resumed_from == 100 * b.entries and r.granted == 2_000
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == 2_000 and set(per_user.values()) == {1}


# ---------------------------------------------------------------------------------------------
# Points


@both
def test_points_from_csv_bad_amounts_duplicates_and_a_rerun(deployment: Deployment, tmp_path: Path) -> None:
    lines = ["user,points,note"] + [f"p{i},{i % 7 + 1},x" for i in range(1_200)]
    lines += [
        "p5,6,dup-same",
        "p6,99,dup-other",
        "p-bad,abc,",
        "p-zero,0,",
        "p-neg,-5,",
        ",10,",
        "p-big,10000000000000,",
    ]
    path = tmp_path / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    src = bulk.read_csv(path, "user", amount_column="points")
    with deployment() as e:
        r = bulk.grant_points(e, src, job_key="pts-1", reason="november", chunk_size=500)
        assert (r.granted, r.already_granted, r.bad_row_count, r.rows) == (1_200, 1, 6, 1_207)
        assert [b.row for b in r.bad_rows] == [1_202, 1_203, 1_204, 1_205, 1_206, 1_207]
        assert "another amount" in r.bad_rows[0].error and "empty user id" in r.bad_rows[4].error
        total = sum(e.points.balance(f"p{i}").total for i in range(1_200))
        assert total == sum(i % 7 + 1 for i in range(1_200))
        (n,) = _query(e, "SELECT count(*) FROM wallet_entries WHERE kind = 'earn' AND reason = 'november'")[0]
        assert n == 1_200
        # A resumed last chunk: the keys answer with the first results, nothing is earned again.
        keys = [f"bulk:pts-1:p{i}" for i in range(1_000)]
        at = max_in(e, "SELECT max(created_at_us) FROM wallet_idempotency WHERE idempotency_key IN", keys)
        rewind_last_chunk(e, "pts-1", rows=207, granted=200, already=1, bad=6, checkpoint_at_us=at)
        r2 = bulk.grant_points(e, src, job_key="pts-1", reason="november", chunk_size=500)
        assert (r2.resumed_from, r2.granted, r2.already_granted, r2.bad_row_count) == (1_000, 1_200, 1, 6)
        assert r2.rows == 1_207 and r2.bad_rows == r.bad_rows
        (n,) = _query(e, "SELECT count(*) FROM wallet_entries WHERE kind = 'earn' AND reason = 'november'")[0]
        assert n == 1_200


# ---------------------------------------------------------------------------------------------
# Sources and bad input


def test_sql_source_through_a_server_side_cursor() -> None:
    pg = env_url("COUPONCORE_TEST_POSTGRES_URL")
    with psycopg.connect(pg) as conn:
        conn.execute("CREATE TABLE bulk_src (id int PRIMARY KEY, user_id text)")
        conn.execute("INSERT INTO bulk_src SELECT i, 'q' || i FROM generate_series(1, 3000) i")
        conn.execute("UPDATE bulk_src SET user_id = NULL WHERE id = 10")
        conn.execute("UPDATE bulk_src SET user_id = '' WHERE id = 20")
    src = bulk.read_sql(pg, "SELECT user_id FROM bulk_src ORDER BY id", fetch_rows=250)
    assert src.total is None
    # A server-side cursor: the source's session fetches 250 rows at a time.
    it = iter(src)
    assert next(it) == "q1"
    with psycopg.connect(pg) as conn:
        (fetching,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'FETCH FORWARD 250 FROM%%couponcore_bulk_source%%'"
        ).fetchone() or (0,)
    assert fetching == 1
    it.close()  # type: ignore[attr-defined]
    with couponcore.open(**production_kwargs()) as e:
        c = e.campaigns.create("sql", quantity=100_000)
        r = bulk.grant_coupons(e, c.id, src, job_key="sql-1", chunk_size=700)
        assert (r.granted, r.bad_row_count) == (2_998, 2)
        assert [(b.row, b.value) for b in r.bad_rows] == [(10, "None"), (20, "")]
        assert len(coupons_per_user(e, c.id)) == 2_998
        # Integer ids come through as their decimal text; a two-column query gives points rows.
        pts = bulk.read_sql(pg, "SELECT id, id % 5 + 1 FROM bulk_src WHERE id <= 50 ORDER BY id")
        rp = bulk.grant_points(e, pts, job_key="sql-pts", reason="sql")
        assert rp.granted == 50 and e.points.balance("7").total == 3
    with pytest.raises(couponcore.InvalidArgument, match="source query failed"):
        list(bulk.read_sql(pg, "SELECT nope FROM bulk_src"))


def test_parquet_source_and_a_typed_error_without_pyarrow(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": [f"pq{i}" for i in range(1_500)], "n": range(1_500)}).to_parquet(path)
    src = bulk.read_parquet(path, "user_id", batch_rows=400)
    assert src.total == 1_500
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("parquet", quantity=100_000)
        r = bulk.grant_coupons(e, c.id, src, job_key="pq", chunk_size=1_000)
        assert r.granted == 1_500 and len(coupons_per_user(e, c.id)) == 1_500
    with pytest.raises(couponcore.InvalidArgument, match="no column"):
        bulk.read_parquet(path, "user")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now fails
    with pytest.raises(couponcore.Unavailable, match="pip install"):
        bulk.read_parquet(path, "user_id")


def test_bad_input_is_a_typed_error_and_changes_nothing(db_path: str, tmp_path: Path) -> None:
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("bad", quantity=10)
        other = e.campaigns.create("other", quantity=10)
        for kwargs, err in [
            ({"job_key": ""}, couponcore.InvalidArgument),
            ({"job_key": "has space"}, couponcore.InvalidArgument),
            ({"job_key": "k" * 101}, couponcore.InvalidArgument),
            ({"job_key": 7}, couponcore.InvalidType),
            ({"job_key": "ok", "chunk_size": 0}, couponcore.InvalidArgument),
            ({"job_key": "ok", "chunk_size": 100_001}, couponcore.InvalidArgument),
            ({"job_key": "ok", "rows_per_s": -1}, couponcore.InvalidArgument),
            ({"job_key": "ok", "rows_per_s": float("nan")}, couponcore.InvalidArgument),
        ]:
            with pytest.raises(err):
                bulk.grant_coupons(e, c.id, ["a", "b"], **kwargs)
        with pytest.raises(couponcore.InvalidType):
            bulk.grant_coupons(e, c.id, "abc", job_key="ok")
        with pytest.raises(couponcore.NotFound):
            bulk.grant_coupons(e, 999_999, ["a"], job_key="ok")
        with pytest.raises(couponcore.NotFound):
            bulk.read_csv(tmp_path / "missing.csv")
        (tmp_path / "u.csv").write_text("id\na\n")
        with pytest.raises(couponcore.InvalidArgument, match="no column 'user_id'"):
            bulk.read_csv(tmp_path / "u.csv")
        assert coupons_per_user(e, c.id) == {}
        bulk.grant_coupons(e, c.id, ["a"], job_key="taken")
        with pytest.raises(couponcore.Conflict, match="another bulk grant"):
            bulk.grant_coupons(e, other.id, ["a"], job_key="taken")
        with pytest.raises(couponcore.Conflict, match="another bulk grant"):
            bulk.grant_points(e, [("a", 1)], job_key="taken", reason="")
        assert coupons_per_user(e, other.id) == {}


@both
def test_a_campaign_paused_mid_chunk_stops_the_run_and_it_resumes(deployment: Deployment) -> None:
    """The campaign is paused in the middle of the first chunk (by the limiter's sleep before its
    fifth gate call of 20 rows): the run stops with Conflict, the checkpoint stays before the
    chunk. The gate remembers NOT_OPEN for the request id, so the resumed run asks with a new
    one, after finding the chunk's first 80 users in the store (per-user limit 2: asked again,
    the gate would grant them a second coupon)."""
    users = [f"z{i}" for i in range(600)]
    now = [0.0]
    with deployment() as e:
        c = e.campaigns.create("paused", quantity=10_000, per_user_limit=2)

        def sleep(s: float) -> None:
            now[0] += s
            if limiter.sleeps == 4:
                e.campaigns.pause(c.id)

        limiter = bulk.RateLimiter(200, clock=lambda: now[0], sleep=sleep)
        with pytest.raises(couponcore.Conflict, match="not open"):
            bulk.grant_coupons(e, c.id, users, job_key="pz", chunk_size=200, rows_per_s=limiter)
        assert len(coupons_per_user(e, c.id)) == 80
        e.campaigns.resume(c.id)
        r = bulk.grant_coupons(e, c.id, users, job_key="pz", chunk_size=200)
        assert (r.resumed_from, r.granted, r.already_granted) == (0, 600, 0)
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == 600 and set(per_user.values()) == {1}


@both
def test_one_run_of_a_job_at_a_time(deployment: Deployment) -> None:
    with deployment() as e:
        c = e.campaigns.create("once", quantity=10_000)
        inner: list[BaseException] = []

        def try_again(done: int, total: int | None) -> None:
            if done == 100:
                try:
                    bulk.grant_coupons(e, c.id, ["x"], job_key="one")
                except couponcore.Conflict as err:
                    inner.append(err)

        r = bulk.grant_coupons(
            e, c.id, [f"o{i}" for i in range(300)], job_key="one", chunk_size=100, on_progress=try_again
        )
        assert r.granted == 300 and len(inner) == 1 and "is running" in str(inner[0])
        if deployment.kind == "production":
            # Another process's run holds the job's advisory lock on its connection.
            with psycopg.connect(e._store[1] or "") as other:
                other.execute("SELECT pg_advisory_lock(hashtext('couponcore.bulk:' || 'two'))")
                with pytest.raises(couponcore.Conflict, match="another process"):
                    bulk.grant_coupons(e, c.id, ["y"], job_key="two")
            assert bulk.grant_coupons(e, c.id, ["y"], job_key="two").granted == 1
        assert len(coupons_per_user(e, c.id)) == (301 if deployment.kind == "production" else 300)


def test_partner_scope_expiry_and_parquet_amounts(db_path: str, tmp_path: Path) -> None:
    """A partner's grant reaches only its own campaigns and wallets; every lot gets the one
    ``expires_at``; Parquet gives ``(user, amount)`` rows, a null amount is a bad row."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "points.parquet"
    pd.DataFrame({"user_id": ["a1", "a2", "a3"], "pts": [5, None, 7]}).to_parquet(path)
    with couponcore.open(db_path) as e:
        acme = e.partners.create("Acme").partner
        shop = e.partner(acme)
        mine = shop.campaigns.create("acme", quantity=10)
        theirs = e.campaigns.create("partner-0", quantity=10)
        r = bulk.grant_coupons(e, mine.id, ["a1", "a2"], job_key="acme-c", partner=acme)
        assert r.granted == 2 and len(coupons_per_user(e, mine.id)) == 2
        with pytest.raises(couponcore.NotFound):
            bulk.grant_coupons(e, theirs.id, ["a1"], job_key="acme-x", partner=acme)
        src = bulk.read_parquet(path, "user_id", amount_column="pts")
        rp = bulk.grant_points(e, src, job_key="acme-p", reason="", partner=acme.id, expires_at=4_000_000_000)
        assert (rp.granted, rp.bad_row_count, rp.bad_rows[0].row) == (2, 1, 2)
        b = shop.points.balance("a3")
        assert b.total == 7 and b.next_expiry_at is not None and b.next_expiry_at.timestamp() == 4_000_000_000
        with pytest.raises(couponcore.NotFound):
            e.points.balance("a3")  # partner 0 has no such wallet
