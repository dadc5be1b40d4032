"""``couponcore bench tracing``: the production gate's ceiling with trace context vs without, side by
side in one run (rounds alternate): "off" (no traceparent, tracing=False: no sink), "sink" (the
trace sink registered, no caller context: with the SDK installed, each issue_many call makes its
couponcore.issue CLIENT span and its requests carry that span's context), "carried" (every request with its own
traceparent, written into the grant entries; no sink) and "on" (the same, plus the trace sink: a
record per Lua call and a couponcore.gate.batch span per record, made by the SDK when it is
installed). The gate alone (writer_threads=0), as the `gate` benchmark's ceiling: 4 threads
calling issue_many with 2,000 new users (bench.batched_ceiling)."""

from __future__ import annotations

from typing import Any

from . import open
from .bench import _bench_servers, _cleanup_prefix, batched_ceiling


def _provider() -> Any:
    """An SDK tracer provider that keeps nothing (the spans are made, then dropped), or None."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None

    class Discard(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(Discard()))
    return p


def bench_tracing(requests: int = 400_000, rounds: int = 3) -> dict[str, Any]:
    srv = _bench_servers()
    provider = _provider()
    out: dict[str, Any] = {"benchmark": "tracing", "requests": requests, "rounds": rounds, "sdk": provider is not None}
    best: dict[str, float] = {}
    spans = 0
    dropped = 0
    try:
        for rnd in range(rounds):
            for mode in ("off", "sink", "carried", "on"):
                kw = {"tracing": True, "tracer_provider": provider} if mode in ("sink", "on") else {"tracing": False}
                with open(
                    redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"], writer_threads=0, **kw
                ) as g:
                    rate = batched_ceiling(g, f"{mode}{rnd}-", requests, traced=mode in ("carried", "on"))
                    best[mode] = max(best.get(mode, 0.0), rate)
                    if mode == "on" and g.tracing is not None:
                        g.tracing.flush()
                        s = g.tracing.stats()
                        spans += s["recorded"]
                        dropped += s["dropped"]
    finally:
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    for mode in ("off", "sink", "carried", "on"):
        out[f"ceiling_{mode}_per_s"] = round(best[mode])
    out["sink_vs_off"] = round(best["sink"] / best["off"], 3)
    out["carried_vs_off"] = round(best["carried"] / best["off"], 3)
    out["on_vs_off"] = round(best["on"] / best["off"], 3)
    out["gate_batch_records"] = spans
    out["records_dropped"] = dropped
    return out
