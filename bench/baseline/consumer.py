"""Baseline grant consumer: Redis Stream -> PostgreSQL with psycopg 3 executemany.

Run: python -m bench.baseline.consumer CAMPAIGN_ID  (env BASELINE_REDIS_URL, BASELINE_PREFIX,
BASELINE_POSTGRES_URL). Creates its table if missing; stops after --idle-exit-s without work.
"""

from __future__ import annotations

import argparse
import os
import time

import psycopg
import redis

from .app import REDIS_URL, keys

DDL = """CREATE TABLE IF NOT EXISTS baseline_coupons (
  campaign_id bigint NOT NULL, seq bigint NOT NULL, user_id text NOT NULL, issued_at_ms bigint NOT NULL,
  PRIMARY KEY (campaign_id, seq), UNIQUE (campaign_id, user_id))"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("campaign_id", type=int)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--idle-exit-s", type=float, default=0.0, help="exit after this long without entries (0: never)")
    args = ap.parse_args()
    r = redis.Redis.from_url(REDIS_URL)
    stream = keys(args.campaign_id)[3]
    try:
        r.xgroup_create(stream, "writers", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    with psycopg.connect(os.environ["BASELINE_POSTGRES_URL"]) as conn:
        conn.execute(DDL)
        conn.commit()
        idle_since = time.monotonic()
        while True:
            got = r.xreadgroup("writers", "consumer-1", {stream: ">"}, count=args.batch, block=200)
            entries = got[0][1] if got else []
            if not entries:
                if args.idle_exit_s and time.monotonic() - idle_since > args.idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            rows = [(args.campaign_id, int(f[b"seq"]), f[b"user"].decode(), int(f[b"t"])) for _, f in entries]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO baseline_coupons VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
            conn.commit()
            r.xack(stream, "writers", *[eid for eid, _ in entries])


if __name__ == "__main__":
    main()
