"""W3C trace context through the gate, the grant log and the writer, and the OpenTelemetry spans
they yield (docs/tracing.md), on both deployments, with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import couponcore
import httpx
import pytest
import redis as redis_py
from conftest import production_kwargs
from couponcore.fastapi import create_app
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP3 = "00-11111111111111111111111111111111-2222222222222222-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c803190-b7ad6b7169203330-00"

# Values a caller may send that are not a traceparent: each is ignored, never an error.
MALFORMED: list[Any] = [
    "",
    "x",
    TP[:54],
    TP + "0",
    TP.upper(),
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "\ud800" * 55,  # not even encodable
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 x" * 100,
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # not a str
    12345,
]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def wait_for(exporter: InMemorySpanExporter, engine: couponcore.Engine, pred: Callable[[list[Any]], bool]) -> list[Any]:
    """The finished spans once pred holds (the span thread emits them asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        assert engine.tracing is not None
        engine.tracing.flush()
        got = list(exporter.get_finished_spans())
        if pred(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def linked_to(span: Any, trace_id: int) -> list[Any]:
    return [link for link in span.links if link.context.trace_id == trace_id]


def test_one_http_request_yields_connected_spans(
    open_deployment: Callable[..., couponcore.Engine], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """request -> couponcore.issue -> gate batch -> writer commit: the server span is the child
    of the incoming traceparent, the call's CLIENT span the server span's child; the gate's batch
    span and the commit span link to the CLIENT span (the context the call sent)."""
    provider, exporter = spans
    engine = open_deployment(tracing=True, tracer_provider=provider)
    try:
        key = engine.partners.create("traced").api_key

        async def requests() -> tuple[int, httpx.Response]:
            transport = httpx.ASGITransport(app=create_app(engine))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                made = await client.post("/campaigns", json={"name": "t", "quantity": 5}, headers={"X-API-KEY": key})
                exporter.clear()
                headers = {"X-API-KEY": key, "traceparent": TP}
                return made.json()["id"], await client.post(
                    f"/campaigns/{made.json()['id']}/issue", json={"user_id": "ann"}, headers=headers
                )

        cid, r = asyncio.run(requests())
        assert r.json()["status"] == "ISSUED", r.text
        assert engine.drain(10)
        tid = int(TRACE_ID, 16)

        def complete(got: list[Any]) -> bool:
            names = {s.name for s in got if linked_to(s, tid)}
            return {"couponcore.gate.batch", "couponcore.writer.commit"} <= names

        got = wait_for(exporter, engine, complete)
        server = [s for s in got if s.kind == trace.SpanKind.SERVER]
        assert len(server) == 1
        req = server[0]
        assert req.context.trace_id == tid and req.parent is not None and req.parent.span_id == 0x00F067AA0BA902B7
        (call,) = [s for s in got if s.name == "couponcore.issue"]
        assert call.kind == trace.SpanKind.CLIENT and call.context.trace_id == tid
        assert call.parent is not None and call.parent.span_id == req.context.span_id
        assert call.attributes["couponcore.campaign_id"] == cid
        assert req.start_time <= call.start_time <= call.end_time <= req.end_time
        gate = [s for s in got if s.name == "couponcore.gate.batch" and linked_to(s, tid)]
        commit = [s for s in got if s.name == "couponcore.writer.commit" and linked_to(s, tid)]
        assert len(gate) == 1 and len(commit) == 1, [s.name for s in got]
        for span in (gate[0], commit[0]):
            (link,) = linked_to(span, tid)
            assert link.context.span_id == call.context.span_id  # the call's span, not its parents
            assert span.context.trace_id != tid  # a batch serves many traces: a root, linked
            assert span.start_time <= span.end_time
            assert cid in span.attributes["couponcore.campaign_ids"]
        assert gate[0].attributes["couponcore.requests"] >= 1
        assert commit[0].attributes["couponcore.grants"] >= 1
        assert gate[0].start_time <= commit[0].start_time
    finally:
        engine.close()


def test_current_span_is_the_default_trace_context(
    open_deployment: Callable[..., couponcore.Engine], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    engine = open_deployment(tracing=True, tracer_provider=provider)
    try:
        c = engine.campaigns.create("cur", 10)
        with provider.get_tracer("app").start_as_current_span("checkout") as span:
            assert engine.issue(c.id, "u1").status.name == "ISSUED"
            results = engine.issue_many(c.id, ["u2", "u3", "u4"], traceparent=[TP2, None, UNSAMPLED])
            assert [r.status.name for r in results] == ["ISSUED"] * 3
        assert engine.drain(10)
        mine = span.get_span_context()
        got = wait_for(
            exporter,
            engine,
            lambda got: sum(len(linked_to(s, mine.trace_id)) for s in got if s.name == "couponcore.writer.commit") >= 1,
        )
        commits = [s for s in got if s.name == "couponcore.writer.commit"]
        linked = {(link.context.trace_id, link.context.span_id) for s in commits for link in s.links}
        # u1: its couponcore.issue span, the current span's child
        (call,) = [s for s in got if s.name == "couponcore.issue" and s.context.trace_id == mine.trace_id]
        assert call.parent is not None and call.parent.span_id == mine.span_id
        assert (mine.trace_id, call.context.span_id) in linked
        assert (int(TP2[3:35], 16), int(TP2[36:52], 16)) in linked  # u2: its own
        # u3: None in the list is no trace context; u4: an unsampled one, counted, not linked (no
        # span of its trace is recorded anywhere)
        assert not any(tid == int(UNSAMPLED[3:35], 16) for tid, _ in linked)
        assert sum(s.attributes["couponcore.traced"] for s in commits) == 3
    finally:
        engine.close()


def test_malformed_traceparents_are_ignored(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(tracing=False)
    try:
        assert engine.tracing is None
        c = engine.campaigns.create("bad", len(MALFORMED) * 2 + 10)
        before = engine._core.trace_stats()["malformed_traceparents"]
        for i, bad in enumerate(MALFORMED):
            assert engine.issue(c.id, f"u{i}", traceparent=bad).status.name == "ISSUED"
        results = engine.issue_many(c.id, [f"m{i}" for i in range(len(MALFORMED))], traceparent=MALFORMED)
        assert [r.status.name for r in results] == ["ISSUED"] * len(MALFORMED)
        assert engine.issue_many(c.id, ["one-for-all-1", "one-for-all-2"], traceparent="garbage")[1].seq > 0
        # Not a traceparent for each user: a shape error of the call, like request_ids.
        with pytest.raises(couponcore.InvalidArgument):
            engine.issue_many(c.id, ["a", "b"], traceparent=[TP])
        assert engine.drain(10)
        assert engine.stats(c.id).rows == 2 * len(MALFORMED) + 2
        # Counted: every non-empty str that is not a traceparent (not None, not bytes, not ints).
        malformed_strs = sum(1 for b in MALFORMED if isinstance(b, str) and b and "\ud800" not in b)
        after = engine._core.trace_stats()["malformed_traceparents"]
        assert after - before >= 2 * malformed_strs + 2
        assert f"couponcore_traceparents_malformed_total {after}" in engine.metrics_text()
        coupon = results[0].coupon_id
        used = engine.coupons.use(coupon, "m0", "o1", 100, traceparent="nope")
        assert used.order_id == "o1"
        assert engine.coupons.cancel_use(coupon, "o1", traceparent="00-zz").state.value == "issued"
        w = engine.points.earn("m0", 10, idempotency_key="e1", traceparent="not-one")
        assert w.balance_after == 10
    finally:
        engine.close()


def binary(tp: str) -> bytes:
    """A traceparent's binary form in the grant entry: trace-id, parent-id, flags (25 bytes)."""
    return bytes.fromhex(tp[3:35] + tp[36:52] + tp[53:55])


def test_the_grant_entry_carries_the_traceparent(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Production: a traced grant is written as a version 3 entry with its traceparent (field b, the
    25-byte binary form);
    an untraced batch is still version 1 (no byte more); a batch of which only some requests are
    granted carries the granted ones' traceparents in line order. The writer reads it into Grant::traceparent
    (its commit record links to it)."""
    provider, exporter = spans
    kw = production_kwargs()
    gate_only = couponcore.open(**kw, writer_threads=0, tracing=False)
    try:
        c = gate_only.campaigns.create("entry", 10)
        gate_only.issue(c.id, "traced", traceparent=TP)
        gate_only.issue(c.id, "plain")
        # "traced" holds its coupon already: only "third" is granted, with its own traceparent
        gate_only.issue_many(c.id, ["traced", "third"], traceparent=[TP2, TP3])
        r = redis_py.Redis.from_url(kw["redis"])
        entries = r.xrange(f"{kw['key_prefix']}{{c{c.id}}}:g")
        assert len(entries) == 3
        first, second, third = (fields for _, fields in entries)
        assert third[b"v"] == b"3" and third[b"g"] == b"3 1 third " and third[b"b"] == binary(TP3)
        assert first[b"v"] == b"3" and first[b"g"] == b"1 1 traced " and first[b"b"] == binary(TP)
        assert second[b"v"] == b"1" and second[b"g"] == b"2 1 plain " and b"b" not in second
        r.close()
    finally:
        gate_only.close()
    writer = couponcore.open(**kw, tracing=True, tracer_provider=provider)
    try:
        assert writer.drain(10)
        assert writer.stats(c.id).rows == 3

        def all_committed(got: list[Any]) -> bool:
            return sum(s.attributes["couponcore.grants"] for s in got if s.name == "couponcore.writer.commit") >= 3

        got = wait_for(exporter, writer, all_committed)
        commits = [s for s in got if s.name == "couponcore.writer.commit"]
        links = {(link.context.trace_id, link.context.span_id) for s in commits for link in s.links}
        assert links == {(int(TRACE_ID, 16), 0x00F067AA0BA902B7), (int(TP3[3:35], 16), int(TP3[36:52], 16))}
        assert sum(s.attributes["couponcore.grants"] for s in commits) == 3
        assert sum(s.attributes["couponcore.traced"] for s in commits) == 2
    finally:
        writer.close()


def test_sharded_gate_carries_traceparents(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    engine = couponcore.open(**production_kwargs(), tracing=True, tracer_provider=provider)
    try:
        c = engine.campaigns.create("sharded", 20, shards=3)
        tps = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(8)]
        results = engine.issue_many(c.id, [f"s{i}" for i in range(8)], traceparent=tps)
        assert all(r.status.name == "ISSUED" for r in results)
        assert engine.drain(10)
        want = {(i + 1, i + 1) for i in range(8)}

        def seen(got: list[Any], name: str) -> set[tuple[int, int]]:
            return {(lk.context.trace_id, lk.context.span_id) for s in got if s.name == name for lk in s.links}

        got = wait_for(exporter, engine, lambda got: seen(got, "couponcore.writer.commit") >= want)
        assert seen(got, "couponcore.gate.batch") >= want
        assert seen(got, "couponcore.writer.commit") >= want
    finally:
        engine.close()


def test_without_a_sink_nothing_is_recorded(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(tracing=False)
    try:
        c = engine.campaigns.create("off", 3)
        engine.issue(c.id, "u", traceparent=TP)
        assert engine.drain(10)
        assert engine._core.take_trace_records(100, 0) == []
        s = engine._core.trace_stats()
        assert (s["recorded"], s["dropped"]) == (0, 0)
    finally:
        engine.close()


def test_a_full_buffer_drops_and_counts(open_deployment: Callable[..., couponcore.Engine]) -> None:
    """The native side never waits for the span thread: past capacity, records are dropped."""
    engine = open_deployment(tracing=False)
    try:
        engine._core.enable_tracing(2)  # a sink with no reader
        c = engine.campaigns.create("full", 100)
        for i in range(10):
            engine.issue(c.id, f"u{i}", traceparent=TP)
        assert engine.drain(10)
        s = engine._core.trace_stats()
        assert s["recorded"] == 2 and s["dropped"] >= 8
        assert len(engine._core.take_trace_records(100, 0)) == 2
    finally:
        engine.close()


def test_cancel_use_events_carry_their_traceparents(open_deployment: Callable[..., couponcore.Engine]) -> None:
    """coupons.use and cancel_use (and a cancel after the validity passed: use_cancelled and
    expired) write events carrying the call's traceparent; a call without one writes none."""
    from test_events import collect, group

    engine = open_deployment(tracing=False)
    try:
        c = engine.campaigns.create("tp-events", 10, valid_days=7)
        r1, r2 = engine.issue(c.id, "tp-a"), engine.issue(c.id, "tp-b")
        assert engine.drain(30)
        engine.coupons.use(r1.coupon_id, "tp-a", "o-1", 1000, traceparent=TP)
        engine.coupons.cancel_use(r1.coupon_id, "o-1", traceparent=TP2)
        engine.coupons.use(r2.coupon_id, "tp-b", "o-2", 1000)
        engine.coupons.cancel_use(r2.coupon_id, "o-2", traceparent="  " + TP3 + "\t")  # spaces: dropped
        engine.coupons.use(r1.coupon_id, "tp-a", "o-3", 1000)
        engine.coupons.cancel_use(r1.coupon_id, "o-3")  # none
        mine = {r1.coupon_id, r2.coupon_id}
        got = collect(
            engine, group(), lambda e: e.data.get("coupon_id") in mine, 6, ["coupon.used", "coupon.use_cancelled"]
        )
        by = {(e.type, e.data["coupon_id"], e.data["order_id"]): e.traceparent for e in got}
        assert by == {
            ("coupon.used", r1.coupon_id, "o-1"): TP,
            ("coupon.use_cancelled", r1.coupon_id, "o-1"): TP2,
            ("coupon.used", r2.coupon_id, "o-2"): None,
            ("coupon.use_cancelled", r2.coupon_id, "o-2"): TP3,
            ("coupon.used", r1.coupon_id, "o-3"): None,
            ("coupon.use_cancelled", r1.coupon_id, "o-3"): None,
        }
    finally:
        engine.close()


def test_every_call_gets_one_client_span(
    open_deployment: Callable[..., couponcore.Engine], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """issue_many / aissue / aissue_many, coupons.use / cancel_use and points calls: one CLIENT span
    per call (not per request), child of the given traceparent or the current span, whose context
    is what the call carries (the gate's batch links to it); a failed call's span says so."""
    provider, exporter = spans
    engine = open_deployment(tracing=True, tracer_provider=provider)
    try:
        c = engine.campaigns.create("client", 10)
        app = provider.get_tracer("app")
        with app.start_as_current_span("handler") as handler:
            many = engine.issue_many(c.id, ["m1", "m2", "m3"])

            async def both() -> tuple[Any, Any]:
                return await engine.aissue(c.id, "a1"), await engine.aissue_many(c.id, ["a2", "a3"])

            one, pair = asyncio.run(both())
        assert [r.status.name for r in [*many, one, *pair]] == ["ISSUED"] * 6
        engine.issue(c.id, "given", traceparent=TP)
        assert engine.drain(30)
        engine.coupons.use(many[0].coupon_id, "m1", "o-1", 500, traceparent=TP2)
        engine.coupons.cancel_use(many[0].coupon_id, "o-1", traceparent=TP2)
        engine.points.earn("m1", 10, idempotency_key="ce-1", traceparent=TP3)
        with pytest.raises(couponcore.InsufficientFunds):
            engine.points.use("m1", 99, idempotency_key="cu-1", traceparent=TP3)
        mine = handler.get_span_context()

        def issue_spans(got: list[Any]) -> list[Any]:
            return [s for s in got if s.name == "couponcore.issue"]

        def gate_links(got: list[Any]) -> set[tuple[int, int]]:
            return {
                (lk.context.trace_id, lk.context.span_id)
                for s in got
                if s.name == "couponcore.gate.batch"
                for lk in s.links
            }

        got = wait_for(
            exporter,
            engine,
            lambda got: {(s.context.trace_id, s.context.span_id) for s in issue_spans(got)} <= gate_links(got),
        )
        calls = [s for s in got if s.kind == trace.SpanKind.CLIENT]
        issue = issue_spans(got)
        assert len(issue) == 4, [s.name for s in calls]  # one per call: issue_many, aissue, aissue_many, issue
        under = [s for s in issue if s.parent is not None and s.parent.span_id == mine.span_id]
        assert len(under) == 3 and all(s.context.trace_id == mine.trace_id for s in under)
        assert sorted(s.attributes.get("couponcore.requests", 1) for s in under) == [1, 2, 3]
        (given,) = [s for s in issue if s.context.trace_id == int(TRACE_ID, 16)]
        assert given.parent is not None and given.parent.span_id == 0x00F067AA0BA902B7
        assert {(s.context.trace_id, s.context.span_id) for s in issue} <= gate_links(got)
        by_name = {s.name: s for s in calls if s.context.trace_id != mine.trace_id}
        for name, tp in [
            ("couponcore.coupons.use", TP2),
            ("couponcore.coupons.cancel_use", TP2),
            ("couponcore.points.earn", TP3),
            ("couponcore.points.use", TP3),
        ]:
            span = by_name[name]
            assert span.context.trace_id == int(tp[3:35], 16) and span.parent is not None
            assert span.parent.span_id == int(tp[36:52], 16)
        assert by_name["couponcore.points.use"].status.status_code == trace.StatusCode.ERROR
        assert by_name["couponcore.points.earn"].status.status_code != trace.StatusCode.ERROR
    finally:
        engine.close()


def test_no_client_span_without_an_sdk_provider(open_deployment: Callable[..., couponcore.Engine]) -> None:
    """The API's no-op provider (OpenTelemetry installed, no SDK configured) and tracing=False:
    no CLIENT span; the call carries the caller's context as before."""
    from couponcore.tracing import client_span

    engine = open_deployment(tracing=True, tracer_provider=trace.NoOpTracerProvider())
    try:
        assert engine.tracing is not None and engine.tracing.client_tracer() is None
        with client_span(engine.tracing, "couponcore.issue", None, {}) as tp:
            assert tp is None
        with client_span(engine.tracing, "couponcore.issue", TP, {}) as tp:
            assert tp == TP
        with client_span(None, "couponcore.issue", [TP, None], {}) as tp:
            assert tp == [TP, None]
        c = engine.campaigns.create("noop", 3)
        assert engine.issue(c.id, "u", traceparent=TP).status.name == "ISSUED"
    finally:
        engine.close()


def test_a_standalone_worker_makes_commit_spans(python: str, tmp_path: Any) -> None:
    """`couponcore worker` with OpenTelemetry's usual configuration (OTEL_TRACES_EXPORTER=console)
    emits couponcore.writer.commit spans linking to the traced grants another process issued."""
    import json
    import os
    import subprocess

    kw = production_kwargs()
    gate = couponcore.open(**kw, writer_threads=0, tracing=False)
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "couponcore-worker"}
    stdout = tmp_path / "worker.out"  # a file: the spans of other campaigns may be many
    with stdout.open("w") as sink:
        worker = subprocess.Popen(
            [python, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
             "--key-prefix", kw["key_prefix"], "--report-s", "0", "--no-migrate"],
            stdout=sink, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
    try:
        try:
            c = gate.campaigns.create("worker-spans", 5)
            assert gate.issue(c.id, "w1", traceparent=TP).status.name == "ISSUED"
            assert gate.issue(c.id, "w2").status.name == "ISSUED"
            assert gate.drain(30)
            assert gate.stats(c.id).rows == 2
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert "commit spans on" in err
    finally:
        gate.close()
    out = stdout.read_text()
    spans, decoder, i = [], json.JSONDecoder(), 0
    while True:  # the console exporter's JSON objects, then the worker's stats line
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            break
        obj, i = decoder.raw_decode(out, i)
        if "name" in obj:
            spans.append(obj)
    commits = [s for s in spans if s["name"] == "couponcore.writer.commit"]
    mine = [s for s in commits if any(lk["context"]["trace_id"] == "0x" + TRACE_ID for lk in s["links"])]
    assert len(mine) == 1, commits
    (link,) = mine[0]["links"]
    assert link["context"]["span_id"] == "0x00f067aa0ba902b7"
    assert c.id in mine[0]["attributes"]["couponcore.campaign_ids"]
    assert mine[0]["resource"]["attributes"]["service.name"] == "couponcore-worker"


def test_worker_tracing_choice(python: str) -> None:
    """--tracing on without a configured SDK is a usage error (exit 2), before anything runs."""
    import os
    import subprocess

    kw = production_kwargs()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    r = subprocess.run(
        [python, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
         "--key-prefix", kw["key_prefix"], "--tracing", "on"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "OTEL_TRACES_EXPORTER" in r.stderr
