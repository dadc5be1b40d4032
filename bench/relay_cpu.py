"""CPU time per event of the outbox relay (docs/events.md), which stays meaningful on a loaded
machine where wall-clock rates do not: an engine with events_relay=False writes N grants (N + 1
outbox rows); then a separate process opens an engine whose relay empties the outbox. Prints the
wall time and the microseconds of CPU per event of that process (its relay thread and the engine's
start-up), of its `couponcore-relay` PostgreSQL backend (from /proc: run on the database host) and
of the Redis server (`INFO cpu`; shared with whatever else uses that server).

    bash scripts/with-test-env.sh .venv/bin/python bench/relay_cpu.py [N]   # N: 100,000
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import couponcore
import psycopg
import redis
from couponcore.bench import _bench_servers, _cleanup_prefix

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    srv = _bench_servers()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    kw = {"redis": srv["redis"], "postgres": srv["postgres"], "key_prefix": srv["key_prefix"]}
    try:
        with couponcore.open(**kw, events_relay=False) as e:
            c = e.campaigns.create("relay-cpu", quantity=n)
            for j in range(0, n, 10_000):
                e.issue_many(c.id, [f"rc-{i:08d}" for i in range(j, min(n, j + 10_000))])
            assert e.drain(600)
            rows = e.events.stats()["outbox_rows"]
            rr = redis.Redis.from_url(srv["redis"])
            code = (
                "import couponcore, sys\n"
                f"r = couponcore.open(redis={kw['redis']!r}, postgres={kw['postgres']!r},"
                f" key_prefix={kw['key_prefix']!r}, writer_threads=0)\n"
                "sys.stdin.readline()\nr.close()\n"
            )
            redis0 = _redis_cpu_s(rr)
            relay = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
            t0 = time.perf_counter()
            while e.events.stats()["outbox_rows"] > 0 and time.perf_counter() - t0 < 300:
                time.sleep(0.005)
            wall = time.perf_counter() - t0
            with psycopg.connect(srv["postgres"]) as pc:
                pids = [
                    p
                    for (p,) in pc.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'couponcore-relay'"
                    ).fetchall()
                ]
            pg_s = sum(_cpu_s(p) for p in pids)
            proc_s = _cpu_s(relay.pid)
            redis_s = _redis_cpu_s(rr) - redis0
            assert relay.stdin is not None
            relay.stdin.write("\n")
            relay.stdin.flush()
            relay.wait(60)

            def us(s: float) -> float:
                return round(s / rows * 1e6, 2)

            print(
                json.dumps(
                    {
                        "rows": rows,
                        "wall_s": round(wall, 2),
                        "relay_process_us": us(proc_s),
                        "relay_postgres_us": us(pg_s),
                        "redis_us": us(redis_s),
                    }
                )
            )
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])


if __name__ == "__main__":
    main()
