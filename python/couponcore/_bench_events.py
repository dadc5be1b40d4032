"""`couponcore bench events`: what the domain events cost (docs/events.md), side by side in one
run, alternating off / on `rounds` times (the best of each):

- production: the grant writer's rate (a `couponcore worker` with 2 threads draining a backlog of
  `grants` grants into PostgreSQL) with events off and on, and whether the outbox relay kept up:
  the outbox backlog when the writer finished, and how long the relay took to empty it;
- embedded: issue_many's grant rate (the group commit) with events off and on."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Optional

from .bench import _bench_servers, _cleanup_prefix


def _writer_round(
    srv: dict[str, str],
    prefix: str,
    grants: int,
    events: bool,
    relay_batch_max: int,
    engine_options: Optional[dict[str, Any]] = None,
    traced: bool = False,
) -> dict[str, Any]:
    """A `couponcore worker` (2 threads, events on or off) drains `grants` grants that an engine
    (`engine_options`; traced: each grant with its own traceparent) put into the grant log."""
    from . import _core
    from ._engine import open as cc_open

    # The engine fills the grant log and relays nothing (events_relay=False): the worker's relay
    # is the one that runs, as in a deployment of `couponcore worker` processes.
    with cc_open(
        redis=srv["redis"],
        postgres=srv["postgres"],
        key_prefix=prefix,
        writer_threads=0,
        events_relay=False,
        **(engine_options or {}),
    ) as e:
        c = e.campaigns.create("bench-events", quantity=grants)
        for j in range(0, grants, 10_000):
            users = [f"ev-{i:08d}" for i in range(j, min(grants, j + 10_000))]
            tps = [f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01" for _ in users] if traced else None
            e.issue_many(c.id, users, traceparent=tps)
        worker = _core.Worker(
            {
                "redis_url": srv["redis"],
                "postgres_url": srv["postgres"],
                "key_prefix": prefix,
                "threads": 2,
                "migrate_on_start": False,
                "events": events,
                "events_relay_batch_max": relay_batch_max,
            }
        )
        t0 = time.perf_counter()
        worker.start()
        assert e.drain(600)
        t = time.perf_counter() - t0
        out: dict[str, Any] = {"per_s": round(grants / t)}
        if events:
            s = e.events.stats()
            out["backlog_at_end"] = s["outbox_rows"]
            out["oldest_age_ms_at_end"] = s["outbox_oldest_age_ms"]
            t1 = time.perf_counter()
            while e.events.stats()["outbox_rows"] > 0 and time.perf_counter() - t1 < 120:
                time.sleep(0.01)
            out["relay_catch_up_ms"] = round((time.perf_counter() - t1) * 1000)
            out["relayed_per_s"] = round(grants / (time.perf_counter() - t0))
        worker.stop()
        worker.join(30)
        assert e.stats(c.id).rows == grants
    return out


def _embedded_round(grants: int, events: bool) -> int:
    from ._engine import open as cc_open

    with tempfile.TemporaryDirectory() as d:
        with cc_open(os.path.join(d, "bench.db"), events=events) as e:
            c = e.campaigns.create("bench-events", quantity=grants)
            t0 = time.perf_counter()
            for j in range(0, grants, 10_000):
                e.issue_many(c.id, [f"ev-{i:08d}" for i in range(j, min(grants, j + 10_000))])
            return round(grants / (time.perf_counter() - t0))


def bench_events(
    grants: int = 100_000, embedded_grants: int = 200_000, rounds: int = 2, relay_batch_max: int = 5000
) -> dict[str, Any]:
    srv = _bench_servers()
    out: dict[str, Any] = {
        "benchmark": "events",
        "grants": grants,
        "embedded_grants": embedded_grants,
        "rounds": rounds,
        "relay_batch_max": relay_batch_max,
    }
    best: dict[str, dict[str, Any]] = {"off": {"per_s": 0}, "on": {"per_s": 0}}
    emb = {"off": 0, "on": 0}
    try:
        for r in range(rounds):
            for name, on in (("off", False), ("on", True)):
                res = _writer_round(srv, f"{srv['key_prefix']}{name}{r}:", grants, on, relay_batch_max)
                if res["per_s"] > best[name]["per_s"]:
                    best[name] = res
                emb[name] = max(emb[name], _embedded_round(embedded_grants, on))
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["writer_events_off_per_s"] = best["off"]["per_s"]
    out["writer_events_on_per_s"] = best["on"]["per_s"]
    out["writer_on_vs_off"] = round(best["on"]["per_s"] / best["off"]["per_s"], 2)
    for k in ("backlog_at_end", "oldest_age_ms_at_end", "relay_catch_up_ms", "relayed_per_s"):
        out[f"relay_{k}"] = best["on"][k]
    out["embedded_events_off_per_s"] = emb["off"]
    out["embedded_events_on_per_s"] = emb["on"]
    out["embedded_on_vs_off"] = round(emb["on"] / emb["off"], 2)
    return out
