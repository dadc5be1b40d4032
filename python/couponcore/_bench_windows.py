"""``couponcore bench windows``: what the live windows cost and how fast they aggregate.

- the gate's ceiling with answer recording on and off, side by side in one run (runs alternate
  off / on, ``rounds`` times, best of each): production gate alone (writers elsewhere;
  ``measure_gate``), batched callers (issue_many of 2,000 new users, one thread per campaign,
  4 campaigns) and 16 threads issuing one request at a time; and the embedded
  sold-out fast path (callers answered in their own thread, where recording is the whole extra
  cost), 16 threads of issue();
- the aggregator's rate on a synthetic source in an embedded file: ``campaigns`` campaigns,
  ``seconds`` seconds, a record per campaign every 200 ms (each one second's partial of
  ``answers_per_record`` answers, 3 statuses, 6 latency buckets): answers/s, records/s; and
  the worst case of one answer per record (records/s = answers/s).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from typing import Any

from ._engine import Engine, open
from .windows import Aggregator, SqliteSource, SqliteStore


def _fast_path(e: Engine, tag: str, threads: int, per_thread: int) -> float:
    from .bench import _threaded

    c = e.campaigns.create(f"bench-w-fast-{tag}", quantity=1)
    e.issue(c.id, "first")  # sold out: every later answer comes from the fast path
    return threads * per_thread / _threaded(threads, per_thread, lambda u: e.issue(c.id, u))


def _synthetic(path: str, campaigns: int, seconds: int, answers_per_record: int) -> tuple[int, int]:
    db = sqlite3.connect(path)
    rows = []
    answers = 0
    s0 = 1_700_000_000
    for s in range(seconds):
        for tick in range(5):
            for c in range(1, campaigns + 1):
                a = answers_per_record
                i, so, ai = a // 2, a // 4, a - a // 2 - a // 4
                hist = f"40={a // 6},44={a // 6},48={a // 6},52={a // 6},56={a // 6},60={a - 5 * (a // 6)}"
                if a == 1:
                    i, so, ai, hist = 1, 0, 0, "40=1"
                counts = ",".join(f"{k}={v}" for k, v in ((0, i), (1, so), (2, ai)) if v)
                flush_ms = (s0 + s) * 1000 + tick * 200 + 199
                rows.append((c, f"1 {flush_ms} bench.{len(rows) + 1} {s0 + s}/{counts}/{hist}/{1000 + tick}"))
                answers += a
    with db:
        db.executemany("INSERT INTO answer_log (campaign_id, record) VALUES (?, ?)", rows)
    db.close()
    return len(rows), answers


def _aggregate_rate(d: str, name: str, campaigns: int, seconds: int, answers_per_record: int) -> dict[str, Any]:
    path = os.path.join(d, f"{name}.db")
    open(path).close()  # the schema
    records, answers = _synthetic(path, campaigns, seconds, answers_per_record)
    agg = Aggregator(SqliteSource(path), SqliteStore(path))
    t0 = time.perf_counter()
    n = agg.run()
    t = time.perf_counter() - t0
    assert n == records and agg.answers == answers, (n, records, agg.answers, answers)
    rates = {"records_per_s": round(records / t), "answers_per_s": round(answers / t)}
    return {"records": records, "answers": answers, **rates}


def bench_windows(
    rounds: int = 3,
    ceiling_requests: int = 200_000,
    fast_threads: int = 16,
    fast_per_thread: int = 20_000,
    campaigns: int = 20,
    seconds: int = 300,
    answers_per_record: int = 100,
) -> dict[str, Any]:
    from ._bench_cluster import measure_gate
    from .bench import _bench_servers, _cleanup_prefix

    out: dict[str, Any] = {"benchmark": "windows", "rounds": rounds}
    srv = _bench_servers()
    best: dict[str, float] = {}

    def keep(key: str, v: float) -> None:
        best[key] = max(best.get(key, 0.0), v)

    try:
        for r in range(rounds):
            for on in (False, True):
                tag = f"{'on' if on else 'off'}{r}"
                ceiling, one_at_a_time = measure_gate(
                    srv["redis"], srv["postgres"], srv["key_prefix"], {"windows": on}, 4, ceiling_requests, 16, 2_000
                )
                keep(f"production_gate_{'on' if on else 'off'}_per_s", ceiling)
                keep(f"production_16_threads_{'on' if on else 'off'}_per_s", one_at_a_time)
                with tempfile.TemporaryDirectory(prefix="couponcore-bench-") as d:
                    with open(os.path.join(d, "e.db"), windows=on) as e:
                        keep(
                            f"embedded_fast_path_{'on' if on else 'off'}_per_s",
                            _fast_path(e, tag, fast_threads, fast_per_thread),
                        )
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    for k, v in sorted(best.items()):
        out[k] = round(v)
    for what in ("production_gate", "production_16_threads", "embedded_fast_path"):
        out[f"{what}_on_off_ratio"] = round(best[f"{what}_on_per_s"] / best[f"{what}_off_per_s"], 3)
    with tempfile.TemporaryDirectory(prefix="couponcore-bench-") as d:
        out["aggregate"] = _aggregate_rate(d, "packed", campaigns, seconds, answers_per_record)
        out["aggregate_one_answer_per_record"] = _aggregate_rate(d, "single", campaigns, seconds // 5, 1)
    return out
