"""`couponcore bench replicas`: what replica-acknowledged grants cost. The gate on the test
Redis Cluster (3 masters, one replica each; COUPONCORE_BENCH_REDIS_CLUSTER, else
COUPONCORE_TEST_REDIS_CLUSTER) with replicas_acked off and on (one WAIT per master per pipeline
of batches), side by side in one run, alternating off/on `rounds` times; the best of each."""

from __future__ import annotations

from typing import Any

from ._bench_cluster import _cleanup_cluster, _cluster_url, measure_gate
from .bench import _bench_servers


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
                c, t = measure_gate(
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
