"""`couponcore bench cluster`: the production gate on Redis Cluster vs one Redis server, and vs
redis-py's RedisCluster running an equivalent Lua script per request. The cluster's seeds come
from COUPONCORE_BENCH_REDIS_CLUSTER (else COUPONCORE_TEST_REDIS_CLUSTER, which
scripts/with-test-env.sh sets). All on one machine: the masters share its cores with the client,
so this shows the cost of routing, not a cluster's speed-up (see docs/production.md)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

from . import open
from .bench import _GATE_LUA, _bench_servers, _cleanup_prefix, _threaded


def _cluster_url() -> str:
    url = os.environ.get("COUPONCORE_BENCH_REDIS_CLUSTER") or os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER")
    if not url:
        raise SystemExit("couponcore bench cluster: set COUPONCORE_BENCH_REDIS_CLUSTER (redis+cluster://host:port,...)")
    return url


def _first_seed(url: str) -> str:
    return "redis://" + url.split("://", 1)[1].split(",", 1)[0].split("/", 1)[0]


def _cleanup_cluster(url: str, prefix: str) -> None:
    from redis.cluster import RedisCluster

    r = RedisCluster.from_url(_first_seed(url))
    for node in r.get_primaries():
        keys = list(r.scan_iter(match=prefix + "*", count=1000, target_nodes=node))
        for k in keys:
            r.delete(k)
    r.close()


def measure_gate(
    url: str,
    postgres: str,
    prefix: str,
    options: dict[str, Any],
    campaigns: int,
    ceiling_requests: int,
    threads: int,
    per_thread: int,
    campaign: Optional[dict[str, Any]] = None,
) -> tuple[int, int]:
    """Decisions/s of one deployment's gate alone (writer_threads=0) over `campaigns` campaigns
    (created with the keyword arguments `campaign`): the ceiling (one thread per campaign calling
    issue_many with 2,000 new users at a time) and `threads` threads issuing one request at a
    time, round-robin over the campaigns."""
    with open(redis=url, postgres=postgres, key_prefix=prefix, writer_threads=0, **options) as g:
        cs = [g.campaigns.create(f"bench-gate-{i}", quantity=10**8, **(campaign or {})) for i in range(campaigns)]
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


def bench_cluster(
    threads: int = 64, per_thread: int = 300, campaigns: int = 6, ceiling_requests: int = 240_000
) -> dict[str, Any]:
    """Decisions/s of the gate alone (no writers: grants wait in the streams) on one server and
    on the cluster, over `campaigns` campaigns (their hash tags spread over the masters): the
    ceiling (one thread per campaign calling issue_many with 2,000 new users) and 64 threads
    issuing one request at a time; and redis-py's RedisCluster running the FCFS Lua once per
    request from 64 threads over the same number of hash tags."""
    from redis.cluster import RedisCluster

    srv = _bench_servers()
    cluster = _cluster_url()
    out: dict[str, Any] = {"benchmark": "cluster", "threads": threads, "campaigns": campaigns}
    prefixes = {"single": srv["key_prefix"] + "s:", "cluster": srv["key_prefix"] + "c:"}
    try:
        for name, url in (("single", srv["redis"]), ("cluster", cluster)):
            c, t = measure_gate(
                url, srv["postgres"], prefixes[name], {}, campaigns, ceiling_requests, threads, per_thread
            )
            out[f"{name}_ceiling_per_s"], out[f"{name}_threads_per_s"] = c, t
        r = RedisCluster.from_url(_first_seed(cluster), max_connections=threads + 8)
        script = r.register_script(_GATE_LUA)
        tags = [f"{prefixes['cluster']}base{{c{i}}}" for i in range(campaigns)]
        for tag in tags:
            r.hset(f"{tag}:m", mapping={"quantity": 10**8, "issued": 0})
        n = [0]
        nlock = threading.Lock()

        def base_issue(u: str) -> None:
            with nlock:
                n[0] += 1
                tag = tags[n[0] % len(tags)]
            script(keys=[f"{tag}:m", f"{tag}:h", f"{tag}:g"], args=[u, 1, int(time.time() * 1e6)])

        t = _threaded(threads, per_thread, base_issue)
        out["redis_py_cluster_per_s"] = round(threads * per_thread / t)
        assert sum(int(r.hget(f"{tag}:m", "issued") or 0) for tag in tags) == threads * per_thread
        r.close()
    finally:
        _cleanup_prefix(srv["redis"], prefixes["single"])
        _cleanup_cluster(cluster, prefixes["cluster"])
    out["cluster_vs_single_ceiling"] = round(out["cluster_ceiling_per_s"] / out["single_ceiling_per_s"], 2)
    out["cluster_vs_single_threads"] = round(out["cluster_threads_per_s"] / out["single_threads_per_s"], 2)
    out["ours_vs_redis_py_cluster"] = round(out["cluster_threads_per_s"] / out["redis_py_cluster_per_s"], 2)
    return out
