"""`couponcore bench ratelimit`: what the gate's rate limits cost (docs/rate-limits.md). The Redis
gate alone (no writers) on one server, over campaigns without limits ("off"), with per-user and
per-partner limits of 1,000,000 per 1 s window ("on": every request counted, none refused: the
counting is what costs) and with the per-partner limit alone ("partner"), side by side in one
run, alternating `rounds` times; the best of each. The embedded gate's figure is the C++ benchmark BM_GateDecide/0 vs /1
(bench/cpp/gate_bench.cpp)."""

from __future__ import annotations

from typing import Any

from ._bench_cluster import measure_gate
from .bench import _bench_servers, _cleanup_prefix

_VARIANTS: dict[str, dict[str, int]] = {
    "off": {},
    "on": {"rate_limit_per_user": 1_000_000, "rate_limit_per_partner": 1_000_000, "rate_window_ms": 1000},
    "partner": {"rate_limit_per_partner": 1_000_000, "rate_window_ms": 1000},
}


def bench_ratelimit(
    threads: int = 64, per_thread: int = 200, campaigns: int = 6, ceiling_requests: int = 120_000, rounds: int = 3
) -> dict[str, Any]:
    srv = _bench_servers()
    out: dict[str, Any] = {"benchmark": "ratelimit", "threads": threads, "campaigns": campaigns, "rounds": rounds}
    best: dict[str, list[int]] = {name: [0, 0] for name in _VARIANTS}
    prefix = srv["key_prefix"] + "rl:"
    try:
        for r in range(rounds):
            for name, spec in _VARIANTS.items():
                c, t = measure_gate(
                    srv["redis"],
                    srv["postgres"],
                    f"{prefix}{name}{r}:",
                    {},
                    campaigns,
                    ceiling_requests,
                    threads,
                    per_thread,
                    campaign=spec,
                )
                best[name] = [max(best[name][0], c), max(best[name][1], t)]
    finally:
        _cleanup_prefix(srv["redis"], prefix)
    for name in _VARIANTS:
        out[f"limits_{name}_ceiling_per_s"], out[f"limits_{name}_threads_per_s"] = best[name]
    for name in ("on", "partner"):
        out[f"{name}_vs_off_ceiling"] = round(best[name][0] / best["off"][0], 2)
        out[f"{name}_vs_off_threads"] = round(best[name][1] / best["off"][1], 2)
    return out
