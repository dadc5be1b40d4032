"""W3C trace context and OpenTelemetry spans for couponcore (docs/tracing.md).

Three pieces:

* ``current_traceparent()``: the trace context an issue / use / points call carries when the
  caller passes none: the current OpenTelemetry span's (when opentelemetry-api is installed and
  a span is current), else the incoming request's ``traceparent`` header noted by the web
  integrations (``incoming()``), else ``None``.
* ``incoming(headers_value)``: a context manager the FastAPI and Django integrations wrap each
  request in. With OpenTelemetry and no span current (the app is not instrumented) it starts a
  server span, child of the header's context; without OpenTelemetry it keeps the header's value
  for the calls made while handling the request.
* ``SpanEmitter``: the Python thread that takes the engine's trace records (the gate's batches,
  the writers' commits: couponcore/tracing.hpp) and turns them into spans
  ``couponcore.gate.batch`` and ``couponcore.writer.commit``, with the records' own start and end
  times and one link per caller trace context.

Everything here costs a module-level flag test when OpenTelemetry is absent. A malformed
traceparent is ignored, never an error (the engine drops it and counts it).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any, Optional

try:  # the optional extra couponcore[otel]
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator as _Propagator

    OTEL = True
except ImportError:  # pragma: no cover - exercised where opentelemetry-api is not installed
    OTEL = False

__all__ = [
    "OTEL",
    "SpanEmitter",
    "TraceContextMiddleware",
    "client_span",
    "current_traceparent",
    "incoming",
    "span_context_of",
    "worker_tracer_provider",
]

# The incoming request's traceparent while no OpenTelemetry span carries it.
_incoming: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("couponcore_traceparent", default=None)

GATE_BATCH = "couponcore.gate.batch"
WRITER_COMMIT = "couponcore.writer.commit"
# The calls' CLIENT spans: issue / aissue / issue_many / aissue_many, coupons.use / cancel_use;
# points calls: POINTS + the operation ("couponcore.points.earn", ... ".checkout").
ISSUE = "couponcore.issue"
USE = "couponcore.coupons.use"
CANCEL_USE = "couponcore.coupons.cancel_use"
POINTS = "couponcore.points."
_HEX = frozenset("0123456789abcdef")


def _format(ctx: Any) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> Optional[str]:
    """The caller's trace context as a traceparent, or ``None``."""
    if OTEL:
        ctx = _otel_trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return _format(ctx)
    return _incoming.get()


def _linked_context(tp: str) -> Any:
    """The remote SpanContext of a traceparent the engine checked (the records' links)."""
    return _otel_trace.SpanContext(
        int(tp[3:35], 16), int(tp[36:52], 16), True, _otel_trace.TraceFlags(int(tp[53:55], 16))
    )


def span_context_of(traceparent: str) -> Any:
    """The remote OpenTelemetry SpanContext of a version-00 traceparent; None if the value is not
    one or OpenTelemetry is absent."""
    if not OTEL or len(traceparent) != 55 or not set(traceparent[3:35] + traceparent[36:52]) <= _HEX:
        return None
    trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
    if trace_id == 0 or span_id == 0:
        return None
    flags = int(traceparent[53:55], 16) if set(traceparent[53:55]) <= _HEX else 0
    return _otel_trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=_otel_trace.TraceFlags(flags & 0xFF))


@contextlib.contextmanager
def incoming(
    traceparent: Optional[str], name: str, attributes: Optional[dict[str, Any]] = None, engine: Any = None
) -> Iterator[None]:
    """Handle one incoming request under its trace context (see the module's docstring). The
    server span uses ``engine``'s tracer provider when it traces, else the global one."""
    if OTEL and _otel_trace.get_current_span().get_span_context().is_valid:
        yield  # instrumented: the request's span is current already
        return
    if not OTEL:
        token = _incoming.set(traceparent or None)
        try:
            yield
        finally:
            _incoming.reset(token)
        return
    parent = _Propagator().extract({"traceparent": traceparent}) if traceparent else _otel_context.Context()
    emitter = getattr(engine, "tracing", None)
    tracer = emitter.tracer if emitter is not None else _otel_trace.get_tracer("couponcore")
    with tracer.start_as_current_span(name, context=parent, kind=_otel_trace.SpanKind.SERVER, attributes=attributes):
        yield


def _is_sdk(provider: Any) -> bool:
    """True for a tracer provider that makes spans (an SDK's), not the API's no-op or proxy."""
    return not isinstance(provider, (_otel_trace.ProxyTracerProvider, _otel_trace.NoOpTracerProvider))


class SpanEmitter:
    """Takes an engine's (or a standalone worker's) trace records on a daemon thread and emits
    them as spans. ``core``: a ``_core.Engine`` or ``_core.Worker``."""

    def __init__(self, core: Any, tracer_provider: Any = None, capacity: int = 4096) -> None:
        if not OTEL:
            raise RuntimeError("tracing needs opentelemetry-api (pip install 'couponcore[otel]')")
        self._core = core
        self._global = tracer_provider is None  # follow the global provider (it may be set later)
        self._provider = tracer_provider if tracer_provider is not None else _otel_trace.get_tracer_provider()
        from . import __version__

        self.tracer = self._provider.get_tracer("couponcore", __version__)
        self._stop = threading.Event()
        # One emitter of records at a time (flush() and the thread). The thread's take is not
        # under it (it waits up to 100 ms for records): _taking says a take may hold records not
        # emitted yet, _passes counts the thread's finished takes, so flush() can wait for them.
        self._cond = threading.Condition(threading.Lock())
        self._taking = False
        self._passes = 0
        core.enable_tracing(capacity)
        self._thread = threading.Thread(target=self._run, name="couponcore-spans", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._taking = True
            records: list[tuple[Any, ...]] = []
            try:
                records = self._core.take_trace_records(256, 100)
            except Exception:  # the engine closed under us
                return
            finally:
                with self._cond:
                    try:
                        if records:
                            self._emit(records)
                    finally:
                        self._taking = False
                        self._passes += 1
                        self._cond.notify_all()

    def flush(self) -> int:
        """Emits every record noted so far, now; returns how many this call emitted itself.

        A record the thread took before flush() drained the buffer is emitted by the thread:
        flush() waits for that take to end (at most the thread's 100 ms wait for records)."""
        n = 0
        with self._cond:
            pass_in_hand = self._passes if self._taking else None
            while True:
                records = self._core.take_trace_records(1024, 0)
                if not records:
                    break
                self._emit(records)
                n += len(records)
            if pass_in_hand is not None:
                self._cond.wait_for(lambda: self._passes != pass_in_hand)
        return n

    def client_tracer(self) -> Any:
        """The tracer of the calls' CLIENT spans, or None while no SDK tracer provider is
        configured (the API's no-op one makes no spans: the calls then start none)."""
        provider = _otel_trace.get_tracer_provider() if self._global else self._provider
        return self.tracer if _is_sdk(provider) else None

    def stats(self) -> dict[str, int]:
        """recorded / dropped (buffer full) records, and malformed traceparents ignored."""
        return self._core.trace_stats()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops the thread (the engine stops noting records); what is left is emitted."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._core.disable_tracing()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.flush()

    def _emit(self, records: list[tuple[Any, ...]]) -> None:
        root = _otel_context.Context()  # batch spans serve many traces: roots, linked to each
        for kind, start_us, end_us, campaign_ids, items, traced, traceparents in records:
            links = [_otel_trace.Link(_linked_context(tp)) for tp in traceparents]
            gate = kind == "gate.batch"
            attributes = {
                "couponcore.campaign_ids": list(campaign_ids),
                ("couponcore.requests" if gate else "couponcore.grants"): items,
                "couponcore.traced": traced,
            }
            span = self.tracer.start_span(
                GATE_BATCH if gate else WRITER_COMMIT,
                context=root,
                kind=_otel_trace.SpanKind.INTERNAL,
                attributes=attributes,
                links=links,
                start_time=start_us * 1000,
            )
            span.end(end_time=end_us * 1000)


class _Carried:
    """A call without a CLIENT span: it carries the given traceparent, else the caller's."""

    __slots__ = ("tp",)

    def __init__(self, tp: Any) -> None:
        self.tp = tp

    def __enter__(self) -> Any:
        return self.tp

    def __exit__(self, *exc: Any) -> None:
        return None


class _ClientSpan:
    """A call under its CLIENT span: it carries the span's context, the span ends with the call."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def __enter__(self) -> str:
        return _format(self.span.get_span_context())

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> None:
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
        self.span.end()


def client_span(emitter: Optional[SpanEmitter], name: str, traceparent: Any, attributes: dict[str, Any]) -> Any:
    """``with client_span(...) as tp:`` around one issue / use / points call; ``tp`` is the
    traceparent to send. With an engine that traces (``emitter``) under an SDK tracer provider,
    the call gets a CLIENT span ``name``, child of the given ``traceparent`` (else of the current
    context), and carries the span's own context, so the gate's and the writer's spans link to it.
    Otherwise (and for a per-request sequence of traceparents, or a value that is not a valid
    version-00 traceparent, which the engine then checks) the call carries ``traceparent`` as
    given, else the caller's (``current_traceparent()``) -- no span, nothing else to pay."""
    tracer = emitter.client_tracer() if emitter is not None else None
    if tracer is None:
        return _Carried(traceparent if traceparent is not None else current_traceparent())
    parent = None  # the current context
    if traceparent is not None:
        remote = span_context_of(traceparent.strip(" \t")) if isinstance(traceparent, str) else None
        if remote is None:
            return _Carried(traceparent)
        parent = _otel_trace.set_span_in_context(_otel_trace.NonRecordingSpan(remote))
    return _ClientSpan(tracer.start_span(name, context=parent, kind=_otel_trace.SpanKind.CLIENT, attributes=attributes))


def worker_tracer_provider(mode: str) -> Any:
    """The tracer provider of a standalone ``couponcore worker`` (docs/tracing.md), or None.

    ``mode`` "off": None. "auto" and "on": OpenTelemetry's usual configuration -- the global
    provider when an SDK one is set already (``opentelemetry-instrument couponcore worker ...``,
    or a ``sitecustomize``), else, with opentelemetry-sdk installed and ``OTEL_TRACES_EXPORTER``
    naming exporters (``console``, ``otlp``, ... as the SDK's entry points register them; not
    ``none``), a new SDK provider (resource and sampler from the ``OTEL_*`` variables) exporting
    through them in batches, set as the global one. ``OTEL_SDK_DISABLED=true``: None. "on"
    raises RuntimeError where "auto" returns None."""
    import os

    if mode == "off" or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if OTEL and _is_sdk(_otel_trace.get_tracer_provider()):
        return _otel_trace.get_tracer_provider()
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not OTEL or not names:
        if mode == "on":
            raise RuntimeError(
                "--tracing on needs opentelemetry-sdk and OTEL_TRACES_EXPORTER (or opentelemetry-instrument)"
            )
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        if mode == "on":
            raise RuntimeError("--tracing on needs opentelemetry-sdk: pip install opentelemetry-sdk") from None
        return None
    from importlib.metadata import entry_points

    provider = TracerProvider()
    for name in names:
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise RuntimeError(f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    _otel_trace.set_tracer_provider(provider)
    return provider


class TraceContextMiddleware:
    """ASGI middleware: each HTTP request runs under its ``traceparent`` header (``incoming``).
    ``couponcore.fastapi.create_app`` installs it; add it yourself to an app that only includes
    ``create_router``: ``app.add_middleware(TraceContextMiddleware)``."""

    def __init__(self, app: Any, engine: Any = None) -> None:
        self.app = app
        self.engine = engine  # its tracer provider makes the server spans (else the global one)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        traceparent = None
        for name, value in scope.get("headers") or ():
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
                break
        method = scope.get("method", "HTTP")
        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with incoming(traceparent, method, attributes, self.engine):
            await self.app(scope, receive, send)
