"""Claim delay after SIGKILL: how long a dead writer's pending grant-log entries wait for a live one.

    bash scripts/with-test-env.sh .venv/bin/python bench/claim_delay.py [--runs 5] [--victim engine|worker|both]

Per run: a web engine (no writer) issues 800 grants in 8 entries; the victim (an engine with an
in-process writer, or `couponcore worker`) reads all of them while a lock on `coupons` keeps it
from committing; a survivor engine (writer_claim_idle_ms = 120 s: only the heartbeat can explain a
fast takeover) starts; the victim is SIGKILLed and the lock released at once. Measured from the
kill: until the survivor's writer_claimed counter covers the entries ("claim"), and until the
800 rows are in PostgreSQL ("rows"), polling every 10 ms. Prints one JSON object. Uses the servers
of COUPONCORE_TEST_REDIS_URL / COUPONCORE_TEST_POSTGRES_URL and a fresh key prefix per run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import couponcore
import psycopg

ENTRIES, PER_ENTRY, FALLBACK_MS = 8, 100, 120_000
ENGINE_VICTIM = (
    "import json, sys, threading, couponcore\n"
    "e = couponcore.open(**json.loads(sys.argv[1]), writer_threads=1, migrate_on_open=False)\n"
    "threading.Event().wait()\n"
)


def _rows(pg: str, cid: int) -> int:
    with psycopg.connect(pg) as c:
        row = c.execute("SELECT count(*) FROM coupons WHERE campaign_id = %s", (cid,)).fetchone()
        return int(row[0]) if row else 0


def _wait(cond: object, timeout_s: float) -> float:
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError
        time.sleep(0.01)
    return time.monotonic() - t0


def one_run(victim: str, run: int) -> dict[str, float]:
    pg = os.environ["COUPONCORE_TEST_POSTGRES_URL"]
    kw = {
        "redis": os.environ["COUPONCORE_TEST_REDIS_URL"],
        "postgres": pg,
        "key_prefix": f"{os.environ.get('COUPONCORE_TEST_KEY_PREFIX', 'ccbench:')}cd{os.getpid()}x{victim}{run}:",
    }
    with couponcore.open(**kw, writer_threads=0) as web:
        c = web.campaigns.create("claim-delay", quantity=ENTRIES * PER_ENTRY)
        for k in range(ENTRIES):
            web.issue_many(c.id, [f"u{k}-{i}" for i in range(PER_ENTRY)])
        lock = psycopg.connect(pg)
        lock.execute("LOCK TABLE coupons IN SHARE MODE")
        if victim == "engine":
            args = [sys.executable, "-c", ENGINE_VICTIM, json.dumps(kw)]
        else:
            args = [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", pg]
            args += ["--key-prefix", kw["key_prefix"], "--threads", "1", "--report-s", "0", "--no-migrate"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        survivor = None
        try:
            _wait(lambda: [b.pending for b in web.log_backlog() if b.campaign_id == c.id] == [ENTRIES], 60)
            survivor = couponcore.open(**kw, writer_threads=1, writer_claim_idle_ms=FALLBACK_MS)
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            t0 = time.monotonic()
            lock.rollback()
            proc.wait()
            sv = survivor
            _wait(lambda: sv.counters()["writer_claimed"] >= ENTRIES, 60)
            claim = time.monotonic() - t0
            _wait(lambda: _rows(pg, c.id) >= ENTRIES * PER_ENTRY, 60)
            rows = time.monotonic() - t0
            assert _rows(pg, c.id) == ENTRIES * PER_ENTRY
            return {"claim_s": round(claim, 3), "rows_s": round(rows, 3)}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            lock.close()
            if survivor is not None:
                survivor.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--victim", choices=["engine", "worker", "both"], default="both")
    a = ap.parse_args()
    out: dict[str, object] = {"dead_after_ms": 3000, "heartbeat_interval_ms": 1000, "fallback_idle_ms": FALLBACK_MS}
    for victim in ["engine", "worker"] if a.victim == "both" else [a.victim]:
        runs = [one_run(victim, r) for r in range(a.runs)]
        claims = [r["claim_s"] for r in runs]
        out[victim] = {
            "runs": runs,
            "claim_s_min": min(claims),
            "claim_s_median": statistics.median(claims),
            "claim_s_max": max(claims),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
