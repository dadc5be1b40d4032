"""Grant-to-row latency on Redis Cluster at a low issue rate: how long an ISSUED grant takes to be
a row in PostgreSQL when the writers are idle between grants (their cluster reads poll; see
docs/production.md, "Running on Redis Cluster").

One thread issues one coupon, then polls PostgreSQL (every 0.2 ms) until its row is there, then
pauses a random 5-40 ms (the writers go idle), N times; prints the median, p90 and max.

    python bench/writer_poll_latency.py --grants 300
    python bench/writer_poll_latency.py --grants 300 --single   # the floor: one server, BLOCK

Needs COUPONCORE_TEST_REDIS_CLUSTER and COUPONCORE_TEST_POSTGRES_URL (scripts/with-test-env.sh).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import couponcore
import psycopg


def measure(grants: int, redis_url: str, seed: int = 1) -> list[float]:
    rnd = random.Random(seed)
    prefix = f"ccpoll:{os.getpid()}:{time.time_ns()}:"
    out: list[float] = []
    with (
        couponcore.open(
            redis=redis_url,
            postgres=os.environ["COUPONCORE_TEST_POSTGRES_URL"],
            key_prefix=prefix,
            writer_threads=1,
        ) as e,
        psycopg.connect(os.environ["COUPONCORE_TEST_POSTGRES_URL"], autocommit=True) as pg,
    ):
        c = e.campaigns.create("poll-latency", quantity=grants)
        for i in range(grants):
            r = e.issue(c.id, f"u{i}")
            t0 = time.perf_counter()
            while pg.execute("SELECT 1 FROM coupons WHERE id = %s", (r.coupon_id,)).fetchone() is None:
                time.sleep(0.0002)
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(rnd.uniform(0.005, 0.040))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grants", type=int, default=300)
    ap.add_argument("--single", action="store_true", help="the single server (BLOCK on every stream) instead")
    args = ap.parse_args()
    url = os.environ["COUPONCORE_TEST_REDIS_URL" if args.single else "COUPONCORE_TEST_REDIS_CLUSTER"]
    ms = sorted(measure(args.grants, url))
    print(
        f"grants {len(ms)}: median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms, "
        f"max {ms[-1]:.2f} ms, mean {statistics.fmean(ms):.2f} ms"
    )


if __name__ == "__main__":
    main()
