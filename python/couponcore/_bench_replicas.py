"""`couponcore bench replicas`: what replica-acknowledged grants cost. The gate on the test
Redis Cluster (3 masters, one replica each; COUPONCORE_BENCH_REDIS_CLUSTER, else
COUPONCORE_TEST_REDIS_CLUSTER) with replicas_acked off and on (one WAIT per master per pipeline
of batches), side by side in one run, alternating off/on `rounds` times; the best of each."""

from __future__ import annotations

import threading
import time
from typing import Any

from . import open
from ._bench_cluster import _cleanup_cluster, _cluster_url
from .bench import _bench_servers, _threaded


def _measure(
    url: str,
    postgres: str,
    prefix: str,
    options: dict[str, Any],
    campaigns: int,
    ceiling_requests: int,
    threads: int,
    per_thread: int,
) -> tuple[int, int]:
    with open(redis=url, postgres=postgres, key_prefix=prefix, writer_threads=0, **options) as g:
        cs = [g.campaigns.create(f"bench-replicas-{i}", quantity=10**8) for i in range(campaigns)]
        per = ceiling_requests // campaigns
        barrier = threading.Barrier(campaigns)

        def batched(i: int) -> None:
            barrier.wait()
            for j in range(0, per, 2000):
                g.issue_many(cs[i].id, [f"b{i}-{k}" for k in range(j, j + 2000)])

        ts = [threading.Thread(target=batched, args=(i,)) for i in range(campaigns)]
        t0 = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        ceiling = round(per * campaigns / (time.perf_counter() - t0))
        counter = [0]
        lock = threading.Lock()

        def one(u: str) -> None:
            with lock:
                counter[0] += 1
                i = counter[0] % len(cs)
            g.issue(cs[i].id, u)

        t = _threaded(threads, per_thread, one)
        return ceiling, round(threads * per_thread / t)


def bench_replicas(
    threads: int = 64,
    per_thread: int = 200,
    campaigns: int = 6,
    ceiling_requests: int = 120_000,
    rounds: int = 3,
    replica_wait_ms: int = 100,
) -> dict[str, Any]:
    srv = _bench_servers()
    cluster = _cluster_url()
    out: dict[str, Any] = {"benchmark": "replicas", "threads": threads, "campaigns": campaigns, "rounds": rounds}
    best: dict[str, list[int]] = {"off": [0, 0], "on": [0, 0]}
    prefix = srv["key_prefix"] + "r:"
    try:
        for r in range(rounds):
            for name, opts in (("off", {}), ("on", {"replicas_acked": 1, "replica_wait_ms": replica_wait_ms})):
                c, t = _measure(
                    cluster,
                    srv["postgres"],
                    f"{prefix}{name}{r}:",
                    opts,
                    campaigns,
                    ceiling_requests,
                    threads,
                    per_thread,
                )
                best[name] = [max(best[name][0], c), max(best[name][1], t)]
    finally:
        _cleanup_cluster(cluster, prefix)
    for name in ("off", "on"):
        out[f"acked_{name}_ceiling_per_s"], out[f"acked_{name}_threads_per_s"] = best[name]
    out["on_vs_off_ceiling"] = round(best["on"][0] / best["off"][0], 2)
    out["on_vs_off_threads"] = round(best["on"][1] / best["off"][1], 2)
    return out
