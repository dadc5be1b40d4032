"""`couponcore bench shards`: one hot campaign on Redis Cluster with its stock over K=3 shards vs
K=1, side by side in one run (rounds alternate). The cluster's seeds come from
COUPONCORE_BENCH_REDIS_CLUSTER (else COUPONCORE_TEST_REDIS_CLUSTER). On one machine the masters
share its cores with the client: this measures what sharding costs and what it spreads, not the
speed-up of K machines (see docs/production.md "Sharded campaigns")."""

from __future__ import annotations

import threading
import time
from typing import Any

from . import open
from ._bench_cluster import _cleanup_cluster, _cluster_url
from .bench import _bench_servers, _shard_of, _threaded


def bench_shards(
    threads: int = 64, per_thread: int = 300, batch_threads: int = 4, rounds: int = 2, sellout: int = 60_000
) -> dict[str, Any]:
    """Decisions/s of the gate alone (no writers) for one campaign of K=1 and K=3 shards: the
    ceiling (batch_threads threads calling issue_many with 2,000 new users), 64 threads issuing
    one request at a time, and a sell-out of `sellout` coupons by batch_threads threads whose
    users all hash to one shard (every coupon of the others must move to it)."""
    srv = _bench_servers()
    cluster = _cluster_url()
    prefix = srv["key_prefix"] + "k:"
    out: dict[str, Any] = {"benchmark": "shards", "threads": threads, "rounds": rounds}
    best: dict[str, float] = {}
    try:
        with open(redis=cluster, postgres=srv["postgres"], key_prefix=prefix, writer_threads=0) as g:
            for rnd in range(rounds):
                for k in (1, 3):
                    c = g.campaigns.create(f"bench-shards-{k}-{rnd}", quantity=10**8, shards=k)
                    per = 240_000 // batch_threads

                    def batched(i: int, c: Any = c, per: int = per, rnd: int = rnd) -> None:
                        for j in range(0, per, 2000):
                            g.issue_many(c.id, [f"b{rnd}-{i}-{u}" for u in range(j, j + 2000)])

                    ts = [threading.Thread(target=batched, args=(i,)) for i in range(batch_threads)]
                    t0 = time.perf_counter()
                    for th in ts:
                        th.start()
                    for th in ts:
                        th.join()
                    rate = per * batch_threads / (time.perf_counter() - t0)
                    best[f"k{k}_ceiling_per_s"] = max(best.get(f"k{k}_ceiling_per_s", 0.0), rate)

                    def one(u: str, c: Any = c, rnd: int = rnd) -> None:
                        g.issue(c.id, f"t{rnd}-{u}")

                    t = _threaded(threads, per_thread, one)
                    rate = threads * per_thread / t
                    best[f"k{k}_threads_per_s"] = max(best.get(f"k{k}_threads_per_s", 0.0), rate)

                    s = g.campaigns.create(f"bench-sellout-{k}-{rnd}", quantity=sellout, shards=k)
                    users = [f"s{rnd}-{u}" for u in range(sellout * 4)]
                    if k > 1:
                        users = [u for u in users if _shard_of(u, k) == 0][:sellout]
                    else:
                        users = users[:sellout]
                    issued = [0]
                    lock = threading.Lock()

                    def sell(
                        i: int, s: Any = s, users: list[str] = users, issued: list[int] = issued, lock: Any = lock
                    ) -> None:
                        part = users[i::batch_threads]
                        n = 0
                        for j in range(0, len(part), 2000):
                            n += sum(1 for r in g.issue_many(s.id, part[j : j + 2000]) if r.issued)
                        with lock:
                            issued[0] += n

                    ts = [threading.Thread(target=sell, args=(i,)) for i in range(batch_threads)]
                    t0 = time.perf_counter()
                    for th in ts:
                        th.start()
                    for th in ts:
                        th.join()
                    rate = sellout / (time.perf_counter() - t0)
                    assert issued[0] == sellout, (k, issued[0])
                    best[f"k{k}_sellout_per_s"] = max(best.get(f"k{k}_sellout_per_s", 0.0), rate)
    finally:
        _cleanup_cluster(cluster, prefix)
    out.update({key: round(v) for key, v in sorted(best.items())})
    for m in ("ceiling", "threads", "sellout"):
        out[f"k3_vs_k1_{m}"] = round(best[f"k3_{m}_per_s"] / best[f"k1_{m}_per_s"], 2)
    return out
