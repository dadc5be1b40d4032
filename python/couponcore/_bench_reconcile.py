"""`couponcore bench reconcile`: issuance latency during a large reconcile vs quiet (the issue
"reconcile never stalls issuance"). Split from bench.py, which lists every benchmark; only the
public API is used, so bench/reconcile_load.py runs it against any installed build."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from ._engine import Engine, open
from .bench import _bench_servers, _cleanup_prefix


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _latency_summary(lat_us: list[float]) -> dict[str, Any]:
    s = sorted(lat_us)
    return {
        "requests": len(s),
        "p50_ms": round(_percentile(s, 0.50) / 1000, 3),
        "p99_ms": round(_percentile(s, 0.99) / 1000, 3),
        "p999_ms": round(_percentile(s, 0.999) / 1000, 3),
        "max_ms": round(s[-1] / 1000, 3) if s else float("nan"),
    }


def bench_reconcile(
    grants: int = 1_000_000,
    batch: int = 2_000,
    fill_budget_s: float = 60.0,
    threads: int = 16,
    quiet_s: float = 10.0,
    per_thread_max: int = 100_000,
    control_probe: bool = False,
) -> dict[str, Any]:
    """Issuance latency while a large reconcile runs, against the same issuance quiet.

    A production engine with no writers (``writer_threads=0``: grants stay in the grant log)
    issues up to ``grants`` grants into campaign A in ``issue_many`` batches of ``batch`` (from
    4 threads; stops early after ``fill_budget_s``), then campaign B is created. ``threads``
    threads each issue one request at a time into B: for ``quiet_s`` with nothing else running
    (quiet), then while ``reconcile(A)`` re-drives A's whole log into PostgreSQL in another
    thread (during: the threads start once the reconcile has started and stop when it returns),
    then for ``quiet_s`` again (quiet_after); at most ``per_thread_max`` requests per thread and
    phase. The quiet phases last about as long as the reconcile, so that the machine's own
    hiccups weigh alike on every phase's p99.
    Reports p50/p99 of the per-request latency for each phase, the ratio during/quiet, how many
    answers arrived while the reconcile ran, and the longest time with no answer at all.
    With ``control_probe``, one more thread calls ``stats(B)`` (a read on the engine's control
    connection) every 50 ms while the reconcile runs and reports how long those calls took.

    Uses only the public API (``open``, ``issue``, ``issue_many``, ``reconcile``), so
    bench/reconcile_load.py can run it against any installed build of couponcore."""
    srv = _bench_servers()
    out: dict[str, Any] = {"benchmark": "reconcile", "threads": threads, "batch": batch}

    def issue_phase(
        e: Engine, campaign_id: int, tag: str, per_thread: int, stop: Optional[threading.Event], seconds: float = 0.0
    ) -> tuple[list[float], list[float]]:
        """Latencies (us) and completion times (perf_counter s) of every request of the phase."""
        lats: list[list[float]] = [[] for _ in range(threads)]
        ends: list[list[float]] = [[] for _ in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def worker(t: int) -> None:
            mine_l, mine_e = lats[t], ends[t]
            barrier.wait()
            deadline = time.perf_counter() + seconds if seconds else None
            for i in range(per_thread):
                if stop is not None and stop.is_set():
                    return
                if deadline is not None and mine_e and mine_e[-1] > deadline:
                    return
                t0 = time.perf_counter()
                r = e.issue(campaign_id, f"{tag}{t:03d}-{i:07d}")
                t1 = time.perf_counter()
                mine_l.append((t1 - t0) * 1e6)
                mine_e.append(t1)
                if not r.issued:
                    raise RuntimeError(f"bench reconcile: {r!r}")

        ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        barrier.wait()
        for th in ths:
            th.join()
        return [x for li in lats for x in li], [x for li in ends for x in li]

    try:
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"], writer_threads=0) as e:
            a = e.campaigns.create("bench-reconcile-a", quantity=grants)
            batches = [[f"a{i:08d}" for i in range(j, min(grants, j + batch))] for j in range(0, grants, batch)]
            filled = [0] * 4
            deadline = time.perf_counter() + fill_budget_s

            def fill(tid: int) -> None:
                for b in batches[tid::4]:
                    if time.perf_counter() > deadline:
                        return
                    filled[tid] += sum(1 for r in e.issue_many(a.id, b) if r.issued)

            t0 = time.perf_counter()
            fillers = [threading.Thread(target=fill, args=(i,)) for i in range(4)]
            for th in fillers:
                th.start()
            for th in fillers:
                th.join()
            out["fill_s"] = round(time.perf_counter() - t0, 1)
            out["grants_in_log"] = sum(filled)

            b = e.campaigns.create("bench-reconcile-b", quantity=10**8)
            issue_phase(e, b.id, "w", 50, None)  # warm up: connections, campaign cache
            lat, _ = issue_phase(e, b.id, "q", per_thread_max, None, quiet_s)
            out["quiet"] = _latency_summary(lat)

            report: dict[str, Any] = {}
            started, done = threading.Event(), threading.Event()
            span: dict[str, float] = {}

            def run_reconcile() -> None:
                try:
                    started.set()
                    span["start"] = time.perf_counter()
                    report.update(e.reconcile(a.id))
                except Exception as exc:  # reported, not raised: the issuing threads stop all the same
                    report["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    span["end"] = time.perf_counter()
                    done.set()

            probe_ms: list[float] = []

            def probe() -> None:
                while not done.wait(0.05):
                    t0 = time.perf_counter()
                    e.stats(b.id)
                    probe_ms.append((time.perf_counter() - t0) * 1000)

            rt = threading.Thread(target=run_reconcile)
            rt.start()
            started.wait()
            pt = threading.Thread(target=probe) if control_probe else None
            if pt is not None:
                pt.start()
            lat, ends = issue_phase(e, b.id, "d", per_thread_max, done)
            rt.join()
            if pt is not None:
                pt.join()
                probe_ms.sort()
                out["control_stats_during"] = {
                    "calls": len(probe_ms),
                    "p50_ms": round(_percentile(probe_ms, 0.5), 2),
                    "max_ms": round(probe_ms[-1], 1) if probe_ms else None,
                }
            r_start, r_end = span["start"], span["end"]
            during = [x for x, t in zip(lat, ends) if t <= r_end]
            out["during"] = _latency_summary(during)
            out["answers_during_reconcile"] = len(during)
            out["answers_after_reconcile"] = len(lat) - len(during)
            marks = sorted([r_start] + [t for t in ends if t <= r_end] + [r_end])
            out["longest_gap_without_answer_ms"] = round(max(y - x for x, y in zip(marks, marks[1:])) * 1000, 1)
            out["reconcile_s"] = round(r_end - r_start, 2)
            out["reconcile"] = {
                k: report.get(k)
                for k in ("redriven", "log_pending", "gate_issued", "store_rows", "consistent", "error")
                if k in report
            }
            lat, _ = issue_phase(e, b.id, "r", per_thread_max, None, quiet_s)
            out["quiet_after"] = _latency_summary(lat)
            campaigns = [a.id, b.id]
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    # The re-driven rows would make every later run's table bigger: delete them (B's grants are
    # still in its log, whose keys are gone with the prefix).
    import psycopg

    with psycopg.connect(srv["postgres"], autocommit=True) as conn:
        conn.execute("DELETE FROM coupons WHERE campaign_id = ANY(%s)", (campaigns,))
    for k in ("p50", "p99"):
        out[f"ratio_{k}"] = round(out["during"][f"{k}_ms"] / out["quiet"][f"{k}_ms"], 2)
        out[f"ratio_{k}_to_quiet_after"] = round(out["during"][f"{k}_ms"] / out["quiet_after"][f"{k}_ms"], 2)
    out["goal"] = "p99 during reconcile within 2x of quiet"
    return out
