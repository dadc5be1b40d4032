"""The HTTP per-address limit counted in Redis (production engine): issue requests per second
through the FastAPI app without the limit and with it (concurrent requests share Lua calls, off
the event loop), side by side in one run, rounds alternating; and the bare Engine.count_address
call rate from 1 and 8 threads, with the requests per Lua call.

    bash scripts/with-test-env.sh .venv/bin/python bench/address_limit.py --rounds 5

Needs COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL (scripts/with-test-env.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time

import couponcore
import httpx
from couponcore.fastapi import create_app


async def http_rate(app: object, cid: int, key: str, requests: int, concurrency: int) -> float:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:

        async def one(k: int) -> None:
            for j in range(requests // concurrency):
                r = await c.post(f"/campaigns/{cid}/issue", json={"user_id": f"u{k}-{j}"}, headers={"X-API-KEY": key})
                assert r.status_code == 200, r.text

        t = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(concurrency)))
        return requests / (time.perf_counter() - t)


def call_rate(engine: couponcore.Engine, calls: int, threads: int) -> float:
    def run(n: int) -> None:
        for _ in range(n):
            engine._core.count_address("10.0.0.2", 1_000_000, 1000)

    ts = [threading.Thread(target=run, args=(calls // threads,)) for _ in range(threads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return calls / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    prefix = os.environ.get("COUPONCORE_TEST_KEY_PREFIX", "ccbench:") + f"addr{os.getpid()}:"
    with couponcore.open(
        redis=os.environ["COUPONCORE_TEST_REDIS_URL"],
        postgres=os.environ["COUPONCORE_TEST_POSTGRES_URL"],
        key_prefix=prefix,
    ) as e:
        key = e.partners.create("bench").api_key
        cid = e.partner(e.authenticate(key)).campaigns.create("bench", quantity=100_000_000, per_user_limit=1).id
        apps = {"off": create_app(e), "on": create_app(e, address_rate_limit=1_000_000, address_rate_window_s=1.0)}
        got: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                got[name].append(asyncio.run(http_rate(apps[name], cid, key, args.requests, args.concurrency)))
        for name, rates in got.items():
            print(f"http {name}: median {statistics.median(rates):.0f} req/s  rounds {[round(x) for x in rates]}")
        print(f"http on/off: {statistics.median(got['on']) / statistics.median(got['off']):.2f}")
        k = e._core.counters()
        print(f"http on: {k['address_requests'] / max(1, k['address_calls']):.1f} requests per Lua call")
        for threads in (1, 8):
            before = e._core.counters()
            rate = call_rate(e, 4000, threads)
            k = e._core.counters()
            per_call = (k["address_requests"] - before["address_requests"]) / max(
                1, k["address_calls"] - before["address_calls"]
            )
            print(f"count_address, {threads} thread(s): {rate:.0f} calls/s, {per_call:.1f} requests per Lua call")


if __name__ == "__main__":
    main()
