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
            return conn.execute(sql, params).fetchall()
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


def rewind_last_chunk(engine: couponcore.Engine, job_key: str, chunk_rows: int, chunk_granted: int) -> None:
    """Puts the job's checkpoint back by one chunk: as if the process had died after granting
    its last chunk and before committing that chunk's checkpoint."""
    _query(
        engine,
        "UPDATE bulk_jobs SET rows_done = rows_done - %s, chunks_done = chunks_done - 1,"
        " granted = granted - %s, state = 'running' WHERE job_key = %s",
        (chunk_rows, chunk_granted, job_key),
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
    """per_user_limit 3: the gate alone would grant a second coupon once its request-id answers
    are gone (production: answer_ttl_s = 1 s, then 2 s waited; embedded: a reopened engine). The
    checkpoint is rewound by one chunk, as a process killed between a chunk's grants and its
    checkpoint leaves it; the resumed run finds the chunk's users in the store."""
    users = [f"r{i}" for i in range(1_000)]
    opts: dict[str, Any] = {} if deployment.kind == "embedded" else {"answer_ttl_s": 1}
    with deployment(**opts) as e:
        c = e.campaigns.create("limit3", quantity=100_000, per_user_limit=3)
        r = bulk.grant_coupons(e, c.id, users, job_key="resume-1", chunk_size=300)
        assert r.granted == 1_000 and r.chunks == 4
        assert e.drain(30)
        rewind_last_chunk(e, "resume-1", chunk_rows=100, chunk_granted=100)
    if deployment.kind == "production":
        time.sleep(2.2)  # two answer generations: the gate has forgotten the request ids
    with deployment(**opts) as e:
        r2 = bulk.grant_coupons(e, c.id, users, job_key="resume-1", chunk_size=300)
        assert (r2.resumed_from, r2.granted, r2.already_granted, r2.rows) == (900, 1_000, 0, 1_000)
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == 1_000 and set(per_user.values()) == {1}
        # Without the store lookup, the gate would have granted again: it does for a plain retry.
        again = e.issue(c.id, "r999", "bulk:resume-1")
        assert again.issued and coupons_per_user(e, c.id)["r999"] == 2


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
    assert n // 3 <= done < n

    # Resume; production: a writer that claims the dead process's pending grants quickly.
    opts = {} if kind == "embedded" else {"writer_claim_idle_ms": 500}
    with deployment(**opts) as e:
        r = bulk.grant_coupons(e, c.id, bulk.read_csv(csv_path, "user_id"), job_key="kill-1", chunk_size=500)
        assert r.resumed_from >= done and r.rows == n and r.done
        assert r.granted == n and r.already_granted == 0 and r.bad_row_count == 0
        per_user = coupons_per_user(e, c.id)
        assert len(per_user) == n, f"{n - len(per_user)} users have no coupon"
        assert set(per_user.values()) == {1}, "a user was granted twice"


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
    requested: list[float] = []
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("capped", quantity=100_000)
        # 3,000 rows at 2,000 rows/s: gate calls of 200 rows (a tenth of a second's), the first
        # from the bucket's burst, each later one owing a tenth of a second (the sleep is not
        # taken here, so the run stays fast: only the limiter's requests are counted).
        r = bulk.grant_coupons(
            e, c.id, [f"c{i}" for i in range(3_000)], job_key="cap", rows_per_s=2_000, sleep=requested.append
        )
        assert r.granted == 3_000 and e.counters()["requests"] >= 3_000
        assert r.limiter_sleeps >= 5 and sum(requested) == pytest.approx(r.limiter_sleep_s)
        assert r.limiter_sleep_s <= (3_000 - 200) / 2_000 + 1e-9  # never more than the debt
        free = bulk.grant_coupons(e, c.id, [f"f{i}" for i in range(3_000)], job_key="free", sleep=requested.append)
        assert free.granted == 3_000 and free.limiter_sleeps == 0


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
        rewind_last_chunk(e, "pts-1", chunk_rows=207, chunk_granted=200)
        r2 = bulk.grant_points(e, src, job_key="pts-1", reason="november", chunk_size=500)
        assert (r2.resumed_from, r2.granted, r2.rows) == (1_000, 1_200, 1_207)
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
def test_a_paused_campaign_stops_the_run_and_it_resumes(deployment: Deployment) -> None:
    users = [f"z{i}" for i in range(600)]
    with deployment() as e:
        c = e.campaigns.create("paused", quantity=10_000)

        def pause_after_first_chunk(done: int, total: int | None) -> None:
            if done == 200:
                e.campaigns.pause(c.id)

        with pytest.raises(couponcore.Conflict, match="not open"):
            bulk.grant_coupons(e, c.id, users, job_key="pz", chunk_size=200, on_progress=pause_after_first_chunk)
        assert len(coupons_per_user(e, c.id)) == 200
        e.campaigns.resume(c.id)
        r = bulk.grant_coupons(e, c.id, users, job_key="pz", chunk_size=200)
        assert (r.resumed_from, r.granted) == (200, 600)
        assert set(coupons_per_user(e, c.id).values()) == {1}
