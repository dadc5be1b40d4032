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

from ._engine import open


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


def bench_embedded_threads(threads: int = 64, ours_per_thread: int = 1500, baseline_per_thread: int = 150) -> dict[str, Any]:
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


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "embedded": bench_embedded,
    "embedded-threads": bench_embedded_threads,
}
