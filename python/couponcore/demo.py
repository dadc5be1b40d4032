"""The flash-sale demo: ``couponcore demo``.

Modelled on a published load test of a hand-built FCFS coupon system (500 virtual users,
10,000 coupons): by default 200,000 requests from 100,000 distinct users hit one campaign of
10,000 coupons from 500 concurrent virtual users (threads). Half of the requests beyond the
first press of each user are network retries (same request id: must get the same answer) and
half are impatient second presses (new request id: must get ALREADY_ISSUED or SOLD_OUT).
Afterwards the store is read back and checked: rows == quantity, one row per user (limit 1),
seqs 1..quantity.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from ._engine import Engine, open
from ._types import Status


@dataclass
class DemoConfig:
    quantity: int = 10_000
    users: int = 100_000
    requests: int = 200_000
    concurrency: int = 500
    per_user_limit: int = 1
    seed: int = 42
    retry_share: float = 0.5  # of the extra requests, the share that are retries (same id)
    path: Optional[str] = None


def make_traffic(cfg: DemoConfig) -> list[tuple[str, str]]:
    """(user_id, request_id) pairs in arrival order: each user presses once, then the rest of
    the requests are retries of an earlier request or new presses by an earlier user."""
    rng = random.Random(cfg.seed)
    first = [(f"user-{u:07d}", f"r-{u:07d}-0") for u in range(min(cfg.users, cfg.requests))]
    rng.shuffle(first)
    traffic = list(first)
    presses: dict[str, int] = {}
    for i in range(cfg.requests - len(first)):
        # Extras come from users who already pressed, mostly soon after their press.
        pos = len(first) * (i + 1) // max(1, cfg.requests - len(first))
        user, rid = first[rng.randrange(max(1, pos))]
        if rng.random() < cfg.retry_share:
            traffic.append((user, rid))
        else:
            n = presses.get(user, 0) + 1
            presses[user] = n
            traffic.append((user, f"{rid[:-2]}-{n}"))
    # Interleave the extras with the first presses roughly in arrival order.
    head, tail = traffic[: len(first)], traffic[len(first) :]
    out: list[tuple[str, str]] = []
    step = max(1, len(head) // max(1, len(tail))) if tail else len(head)
    ti = 0
    for i, item in enumerate(head):
        out.append(item)
        if tail and (i + 1) % step == 0 and ti < len(tail):
            out.append(tail[ti])
            ti += 1
    out.extend(tail[ti:])
    return out


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k] / 1e6  # ns -> ms


def run_flash_sale(engine: Engine, cfg: DemoConfig, progress: Optional[TextIO] = None) -> dict[str, Any]:
    """Run the sale on ``engine`` and return the summary (the ``--json`` object)."""
    campaign = engine.campaigns.create("demo flash sale", quantity=cfg.quantity, per_user_limit=cfg.per_user_limit)
    traffic = make_traffic(cfg)
    n = len(traffic)
    latencies = [0] * n
    statuses: list[Optional[Status]] = [None] * n
    first_answer: dict[tuple[str, str], tuple[Any, Any]] = {}
    next_index = [0]
    lock = threading.Lock()
    done = [0]
    sold_out_at = [0.0]
    errors: list[BaseException] = []
    start = time.perf_counter()

    def virtual_user() -> None:
        finished_one = False
        try:
            while True:
                with lock:
                    if finished_one:
                        done[0] += 1
                    i = next_index[0]
                    if i >= n:
                        return
                    next_index[0] = i + 1
                finished_one = False
                user, rid = traffic[i]
                t0 = time.perf_counter_ns()
                r = engine.issue(campaign.id, user, rid)
                latencies[i] = time.perf_counter_ns() - t0
                statuses[i] = r.status
                finished_one = True
                if r.status is Status.ISSUED:
                    with lock:
                        prev = first_answer.setdefault((user, rid), (r.status, r.seq))
                        if prev != (r.status, r.seq):
                            errors.append(AssertionError(f"retry of {rid} got {r} after {prev}"))
                        if r.seq == cfg.quantity:
                            sold_out_at[0] = time.perf_counter() - start
        except BaseException as e:  # noqa: BLE001 - reported after the run
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=virtual_user, daemon=True) for _ in range(cfg.concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if progress is not None:
            _draw_progress(progress, done[0], n, time.perf_counter() - start)
        time.sleep(0.1)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if progress is not None:
        _draw_progress(progress, n, n, elapsed)
        progress.write("\n")
    if errors:
        raise errors[0]

    drained = engine.drain(60.0)
    stats = engine.stats(campaign.id)
    lat = sorted(latencies)
    counts = {s: 0 for s in Status}
    for s in statuses:
        if s is not None:
            counts[s] += 1
    issued_answers = counts[Status.ISSUED]
    distinct_issued = len({u for (u, _), (st, _) in first_answer.items() if st is Status.ISSUED})
    expected_rows = min(cfg.quantity, cfg.users * cfg.per_user_limit)
    summary: dict[str, Any] = {
        "engine": engine.kind,
        "campaign_id": campaign.id,
        "quantity": cfg.quantity,
        "users": cfg.users,
        "requests": n,
        "concurrency": cfg.concurrency,
        "per_user_limit": cfg.per_user_limit,
        "seed": cfg.seed,
        "issued": issued_answers,
        "issued_distinct_requests": len(first_answer),
        "sold_out": counts[Status.SOLD_OUT],
        "already_issued": counts[Status.ALREADY_ISSUED],
        "not_open": counts[Status.NOT_OPEN],
        "ended": counts[Status.ENDED],
        "elapsed_s": round(elapsed, 3),
        "decisions_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(_percentile(lat, 0.50), 3),
        "p95_ms": round(_percentile(lat, 0.95), 3),
        "p99_ms": round(_percentile(lat, 0.99), 3),
        "time_to_sold_out_s": round(sold_out_at[0], 3) if sold_out_at[0] else None,
        "drained": drained,
        "rows_in_store": stats.rows,
        "distinct_users": stats.distinct_users,
        "min_seq": stats.min_seq,
        "max_seq": stats.max_seq,
        "holders": distinct_issued,
    }
    checks = {
        "rows == quantity": stats.rows == expected_rows,
        "seqs are 1..rows": stats.rows == 0 or (stats.min_seq == 1 and stats.max_seq == stats.rows),
        "issued answers (first per request id) == rows": len(first_answer) == stats.rows,
        "per-user limit held": stats.distinct_users * cfg.per_user_limit >= stats.rows
        and (cfg.per_user_limit != 1 or stats.distinct_users == stats.rows),
    }
    summary["checks"] = checks
    summary["ok"] = all(checks.values())
    return summary


def _draw_progress(out: TextIO, done: int, total: int, elapsed: float) -> None:
    width = 40
    frac = done / total if total else 1.0
    bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
    rate = done / elapsed if elapsed > 0 else 0.0
    out.write(f"\r[{bar}] {done:>9,}/{total:,} requests  {rate:>10,.0f}/s  {elapsed:6.1f}s")
    out.flush()


def format_table(s: dict[str, Any]) -> str:
    rows = [
        ("engine", s["engine"]),
        ("coupons (quantity)", f"{s['quantity']:,}"),
        ("virtual users (concurrency)", f"{s['concurrency']:,}"),
        ("requests / distinct users", f"{s['requests']:,} / {s['users']:,}"),
        ("ISSUED answers", f"{s['issued']:,}  ({s['issued_distinct_requests']:,} distinct request ids)"),
        ("SOLD_OUT answers", f"{s['sold_out']:,}"),
        ("ALREADY_ISSUED answers", f"{s['already_issued']:,}"),
        ("decisions per second", f"{s['decisions_per_s']:,.0f}"),
        ("latency p50 / p95 / p99", f"{s['p50_ms']:.3f} / {s['p95_ms']:.3f} / {s['p99_ms']:.3f} ms"),
        ("sold out after", f"{s['time_to_sold_out_s']} s" if s["time_to_sold_out_s"] else "not sold out"),
        ("wall time", f"{s['elapsed_s']} s"),
        ("store: rows / distinct users", f"{s['rows_in_store']:,} / {s['distinct_users']:,}"),
        ("store: seq range", f"{s['min_seq']}..{s['max_seq']}"),
    ]
    for name, ok in s["checks"].items():
        rows.append((f"check: {name}", "ok" if ok else "FAILED"))
    w = max(len(r[0]) for r in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 46 + "+"
    out = [line]
    for name, value in rows:
        out.append(f"| {name:<{w}} | {str(value):<44} |")
    out.append(line)
    return "\n".join(out)


def main(cfg: DemoConfig, as_json: bool, engine_factory: Any = None) -> int:
    tmpdir = None
    try:
        if engine_factory is not None:
            engine = engine_factory()
        else:
            path = cfg.path
            if path is None:
                tmpdir = tempfile.mkdtemp(prefix="couponcore-demo-")
                path = os.path.join(tmpdir, "demo.db")
            engine = open(path)
        with engine:
            if not as_json:
                print(
                    f"couponcore demo: {cfg.quantity:,} coupons, {cfg.requests:,} requests from "
                    f"{cfg.users:,} users, {cfg.concurrency} concurrent virtual users ({engine.kind})",
                    file=sys.stderr,
                )
            summary = run_flash_sale(engine, cfg, progress=None if as_json else sys.stderr)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if as_json:
        print(json.dumps(summary))
    else:
        print(format_table(summary))
    return 0 if summary["ok"] else 1
