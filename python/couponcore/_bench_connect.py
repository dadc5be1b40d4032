"""`couponcore bench connect`: what connecting couponcore costs, all of it at once, side by side in
one run (rounds alternate off / on, the best of each is kept):

- "off": domain events, live windows and tracing all off, requests without a traceparent;
- "on": events written and relayed (docs/events.md), every answer recorded for the live windows
  (docs/windows.md), every request with its own traceparent and the trace sink registered, its
  records turned into spans by the OpenTelemetry SDK with an exporter that drops them
  (docs/tracing.md).

Measured: the production gate's ceiling (the gate alone, 4 threads calling issue_many with 2,000
new users: bench.batched_ceiling), and the grant writer's rate (a `couponcore worker` with 2
threads draining a backlog of `grants` grants into PostgreSQL; "on": the grants carry their
traceparents and the worker writes and relays their events), with the outbox relay's backlog
when the writer finished and how long it took to empty it. Rate limits are off in both (their
cost: `couponcore bench ratelimit`)."""

from __future__ import annotations

from typing import Any

from ._bench_events import _writer_round
from ._bench_tracing import _provider
from .bench import _bench_servers, _cleanup_prefix, batched_ceiling


def _options(on: bool, provider: Any) -> dict[str, Any]:
    if on:
        return {"events": True, "windows": True, "tracing": provider is not None, "tracer_provider": provider}
    return {"events": False, "windows": False, "tracing": False}


def _gate(srv: dict[str, str], prefix: str, on: bool, provider: Any, requests: int) -> float:
    from . import open

    with open(
        redis=srv["redis"], postgres=srv["postgres"], key_prefix=prefix, writer_threads=0, **_options(on, provider)
    ) as g:
        return batched_ceiling(g, "c-", requests, traced=on)


def _writer(srv: dict[str, str], prefix: str, on: bool, provider: Any, grants: int) -> dict[str, Any]:
    # "on": the grants carry traceparents, the worker writes and relays their events.
    return _writer_round(srv, prefix, grants, on, 5000, _options(on, provider), traced=on)


def bench_connect(requests: int = 400_000, grants: int = 100_000, rounds: int = 2) -> dict[str, Any]:
    srv = _bench_servers()
    provider = _provider()
    out: dict[str, Any] = {
        "benchmark": "connect",
        "requests": requests,
        "grants": grants,
        "rounds": rounds,
        "sdk": provider is not None,
    }
    gate = {"off": 0.0, "on": 0.0}
    writer: dict[str, dict[str, Any]] = {"off": {"per_s": 0}, "on": {"per_s": 0}}
    try:
        for r in range(rounds):
            for name in ("off", "on"):
                on = name == "on"
                gate[name] = max(gate[name], _gate(srv, f"{srv['key_prefix']}g{name}{r}:", on, provider, requests))
                w = _writer(srv, f"{srv['key_prefix']}w{name}{r}:", on, provider, grants)
                if w["per_s"] > writer[name]["per_s"]:
                    writer[name] = w
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["gate_off_per_s"], out["gate_on_per_s"] = round(gate["off"]), round(gate["on"])
    out["gate_on_vs_off"] = round(gate["on"] / gate["off"], 3)
    out["writer_off_per_s"], out["writer_on_per_s"] = writer["off"]["per_s"], writer["on"]["per_s"]
    out["writer_on_vs_off"] = round(writer["on"]["per_s"] / writer["off"]["per_s"], 3)
    out["relay_backlog_at_end"] = writer["on"]["backlog_at_end"]
    out["relay_catch_up_ms"] = writer["on"]["relay_catch_up_ms"]
    return out
