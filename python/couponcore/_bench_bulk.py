"""``couponcore bench bulk``: bulk grants with and without the rows/s cap, and the load they put
on PostgreSQL, side by side in one run (production deployment: Redis gate, grant log, the
engine's writer, PostgreSQL).

For each case the benchmark reports rows/s (rows to the last grant in PostgreSQL: the coupon
runs drain the grant log before the clock stops) and, from a sampler on its own connection,
PostgreSQL's load while it ran: commits/s and rows inserted/s (``pg_stat_database`` deltas of
the benchmark's database over the run) and active backends (``pg_stat_activity``, sampled every
100 ms: mean and max), plus the grant log's largest backlog (entries) seen. The baseline is what
a user writes without ``couponcore.bulk``: a loop calling ``issue`` (coupons) or ``earn``
(points) once per user.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from . import bulk
from ._engine import Engine, open

# PostgreSQL 15+ backends flush their statistics at most once a second while busy, and an idle
# backend within 10 s: the counts are read that long after a case, so each case has its own.
_STATS_SETTLE_S = 11.0


class _PgLoad:
    """Samples PostgreSQL while a case runs, on a connection of its own."""

    def __init__(self, dsn: str, engine: Engine, campaign_id: int | None) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.engine, self.campaign_id = engine, campaign_id
        self.active: list[int] = []
        self.backlog_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _stat(self) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND pid <> pg_backend_pid()"
            ).fetchone()
            self.active.append(int(row[0]) if row else 0)
            if self.campaign_id is not None:
                for b in self.engine.log_backlog():
                    if b.campaign_id == self.campaign_id:
                        self.backlog_max = max(self.backlog_max, b.entries)

    def __enter__(self) -> _PgLoad:
        self.start = self._stat()
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        time.sleep(_STATS_SETTLE_S)
        end = self._stat()
        self.commits = end[0] - self.start[0]
        self.inserted = end[1] - self.start[1]
        self.conn.close()

    def report(self, rows: int) -> dict[str, Any]:
        s = self.elapsed_s
        return {
            "rows": rows,
            "seconds": round(s, 2),
            "rows_per_s": round(rows / s),
            "pg_commits_per_s": round(self.commits / s),
            "pg_rows_inserted_per_s": round(self.inserted / s),
            "pg_active_backends_mean": round(sum(self.active) / max(1, len(self.active)), 2),
            "pg_active_backends_max": max(self.active, default=0),
            "log_backlog_entries_max": self.backlog_max,
        }


def bench_bulk(
    users: int = 100_000,
    points_users: int = 20_000,
    cap_fraction: float = 0.25,
    loop_users: int = 10_000,
    points_loop_users: int = 2_000,
) -> dict[str, Any]:
    """Coupons to ``users`` users and points to ``points_users``: uncapped, then capped at
    ``cap_fraction`` of the uncapped rate just measured (so the cap binds on any machine); and
    the per-user loops as the baseline (``loop_users`` issues, ``points_loop_users`` earns)."""
    from .bench import _bench_servers, _cleanup_prefix

    srv = _bench_servers()
    out: dict[str, Any] = {"benchmark": "bulk", "cap_fraction": cap_fraction}
    try:
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"]) as e:
            stamp = time.time_ns()
            time.sleep(_STATS_SETTLE_S)  # the statistics of whatever ran before

            def coupons(tag: str, n: int, cap: int | None) -> dict[str, Any]:
                c = e.campaigns.create(f"bench-bulk-{tag}", quantity=10**8)
                with _PgLoad(srv["postgres"], e, c.id) as load:
                    r = bulk.grant_coupons(
                        e, c.id, (f"{tag}-{i}" for i in range(n)), job_key=f"bench-{stamp}-{tag}", rows_per_s=cap
                    )
                    assert e.drain(600)
                assert r.granted == n
                return {**load.report(n), "limiter_sleeps": r.limiter_sleeps, "backlog_waits": r.backlog_waits}

            def points(tag: str, n: int, cap: int | None) -> dict[str, Any]:
                rows = ((f"{tag}-{i}", 10) for i in range(n))
                with _PgLoad(srv["postgres"], e, None) as load:
                    r = bulk.grant_points(e, rows, job_key=f"bench-{stamp}-{tag}", reason="bench", rows_per_s=cap)
                assert r.granted == n
                return {**load.report(n), "limiter_sleeps": r.limiter_sleeps}

            def loop(tag: str, n: int, one: Callable[[str], Any], campaign: int | None) -> dict[str, Any]:
                with _PgLoad(srv["postgres"], e, campaign) as load:
                    for i in range(n):
                        one(f"{tag}-{i}")
                    assert e.drain(600)
                return load.report(n)

            out["coupons_uncapped"] = coupons("cu", users, None)
            cap = max(1, round(out["coupons_uncapped"]["rows_per_s"] * cap_fraction))
            out["coupons_capped"] = {"cap_rows_per_s": cap, **coupons("cc", users, cap)}
            base = e.campaigns.create("bench-bulk-loop", quantity=10**8)
            out["coupons_issue_loop"] = loop("cl", loop_users, lambda u: e.issue(base.id, u), base.id)
            out["points_uncapped"] = points("pu", points_users, None)
            cap = max(1, round(out["points_uncapped"]["rows_per_s"] * cap_fraction))
            out["points_capped"] = {"cap_rows_per_s": cap, **points("pc", points_users, cap)}
            out["points_earn_loop"] = loop(
                "pl", points_loop_users, lambda u: e.points.earn(u, 10, idempotency_key=f"loop-{stamp}-{u}"), None
            )
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    return out
