"""Prometheus metrics of an engine: ``engine.metrics_text()`` renders the text exposition format,
and :class:`CouponcoreCollector` plugs the same metrics into a ``prometheus_client`` registry.

Names follow Prometheus conventions, all with the prefix ``couponcore_``:

- ``couponcore_issue_requests_total{outcome}``   issue decisions by outcome (issued, sold_out, ...)
- ``couponcore_issue_batches_total``             decision batches (one atomic step each)
- ``couponcore_commits_total``                   durable writes of grants
- ``couponcore_commit_failures_total``           batches whose grants could not be made durable
- ``couponcore_fast_path_requests_total``        answered without a round trip (sold out)
- ``couponcore_queue_depth{queue}``              gauge, work waiting in the issue / wallet queue
- ``couponcore_queue_refused_total{queue}``      submissions refused: the queue stayed full
- ``couponcore_issue_latency_seconds``           histogram, submit to answer, per request
- ``couponcore_batch_requests``                  histogram, requests per decision batch
- ``couponcore_commit_grants``                   histogram, grants per durable write
- ``couponcore_coupon_uses_total{outcome}``      coupon use calls: used (a replay by order id
                                                 included), cancelled, refused (answered with an
                                                 error: unknown, used, expired, below minimum...)
- ``couponcore_traceparents_malformed_total``, ``couponcore_trace_records_total``,
  ``couponcore_trace_records_dropped_total``      tracing (docs/tracing.md)
- ``couponcore_auth_*_total``                    API-key authentications, failures, cache hits
                                                 (in-process, shared) and database lookups
- ``couponcore_wallet_*_total``                  wallet operations, errors, replays, batches,
                                                 retries (once the wallets are open)

Once the engine used ``engine.jobs``, the jobs this process ran: ``couponcore_job_runs_total``,
``couponcore_job_duration_seconds``, ``couponcore_job_rows_total``,
``couponcore_job_last_success_timestamp_seconds``, ``couponcore_job_schedule_interval_seconds``
(by ``job``; docs/jobs.md).

Domain events (docs/events.md): ``couponcore_events_written_total`` (the deployment's outbox /
log sequence: events written), and, production only, ``couponcore_events_relayed_total`` (this
process's relay), ``couponcore_events_outbox_rows`` and ``couponcore_events_outbox_oldest_seconds``
(the outbox backlog: it grows when no relay runs or Redis is away), ``couponcore_events_relay_active``.

Live windows (docs/windows.md): every engine that records exports its recorder's
``couponcore_windows_answers_recorded_total``, ``_records_flushed_total``,
``_flush_failures_total``, ``_records_dropped_total``, ``_answers_dropped_total`` and the gauge
``couponcore_windows_clock_offset_seconds``; once ``engine.windows`` was opened (and in
``couponcore worker``) the aggregator's ``couponcore_windows_aggregator_lag_seconds`` and
``couponcore_windows_late_answers_total`` (the worker also ``couponcore_windows_aggregator_active``).

Production only, the grant log's backlog (``engine.log_backlog()``), gauges by campaign:

- ``couponcore_log_entries{campaign}``            entries in the grant stream, not yet settled
- ``couponcore_log_pending{campaign}``            entries delivered to a writer, not acknowledged
- ``couponcore_log_oldest_pending_seconds{campaign}``  age of the oldest pending entry (Redis clock)
- ``couponcore_dead_letters{campaign}``           entries in the campaign's dead-letter stream
- ``couponcore_log_oldest_unread_seconds{campaign}``  age of the oldest entry no writer has read yet
                                                 (after the group's last-delivered-id; Redis clock):
                                                 it grows when no writer reads at all

Production only, the grant writers (``engine.writers()``; see docs/production.md, "When a writer
dies"):

- ``couponcore_writers_alive``                    gauge, writer consumers of the deployment whose
                                                 heartbeat (on the Redis clock) is younger than
                                                 ``writer_dead_after_ms``; 0: nothing moves grants
                                                 into PostgreSQL (alert CouponcoreNoLiveWriter)
- ``couponcore_writer_claimed_total``             entries this process's writers took over from
                                                 dead consumers (by heartbeat, or idle for
                                                 ``writer_claim_idle_ms``); a standalone worker
                                                 reports it as ``claimed`` in its stats

Production only, replica-acknowledged grants (``replicas_acked`` > 0; docs/production.md,
"Replicas and failover"):

- ``couponcore_replica_waits_total``              ``WAIT`` commands sent: one per master per gate
                                                 pipeline, per stock move step of a sharded
                                                 campaign, per writer read, per reconcile page
- ``couponcore_replica_wait_shortfalls_total``    of which counted fewer replicas than asked within
                                                 ``replica_wait_ms``: those answers were held back
                                                 (``Unavailable`` or re-sent); a steady rise means
                                                 a master without enough live replicas

Cardinality: one series per gauge and campaign with a grant log (every campaign created on the
deployment, at most 10,000: the newest ids), and the values are the deployment's, so every engine
on it exports the same ones (aggregate with ``max by (campaign)``). A scrape reads them from Redis
(pipelined, a few commands per campaign); if Redis does not answer, the backlog gauges are left
out of that scrape and the rest is exported.

The standalone writer (``couponcore worker --metrics-port``) exports :func:`render_worker`: its
writer counters under the names the engine's in-process writers use (``grants_written``,
``dead_lettered``, ``writer_failures``), ``couponcore_writer_batches_total``,
``couponcore_writer_claimed_total``, ``couponcore_writer_breaker_open``,
``couponcore_writer_threads``, ``couponcore_worker_up`` and the same backlog gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _core
from ._core import Unavailable
from .windows._metrics import aggregator_metrics, recorder_metrics

if TYPE_CHECKING:
    from ._engine import Engine
    from ._types import LogBacklog

_COUNTERS = [
    ("issue_batches", "batches", "Decision batches (one atomic step each)."),
    ("commits", "commits", "Durable writes of grants (group commits or writer batches)."),
    ("commit_failures", "commit_failures", "Batches whose grants could not be made durable."),
    ("fast_path_requests", "fast_path", "Issue requests answered without a round trip (sold out)."),
    ("unavailable", "unavailable", "Issue submissions answered Unavailable (Redis dropped or down)."),
    ("redis_reconnects", "redis_reconnects", "Gate connections (re)established."),
    ("grants_written", "grants_written", "Grants the in-process writers put into PostgreSQL."),
    ("dead_lettered", "dead_lettered", "Grant-log entries moved to a dead-letter stream."),
    ("writer_failures", "writer_failures", "Writer attempts that failed (database down, ...)."),
    ("writer_claimed", "writer_claimed", "Grant-log entries the in-process writers took over from dead consumers."),
    (
        "replica_waits",
        "replica_waits",
        "WAITs sent for replica-acknowledged grants (replicas_acked > 0): batches, stock moves, writers, reconcile.",
    ),
    (
        "replica_wait_shortfalls",
        "replica_wait_shortfalls",
        "WAITs that counted fewer replicas than replicas_acked in replica_wait_ms (answers held back).",
    ),
]
# The engines' bounded queues (one type, util/bounded_queue.hpp): one pair of series, by queue.
_QUEUE_DEPTH_HELP = "Work waiting in an engine queue (issue: requests; wallet: operations)."
_QUEUE_REFUSED_HELP = "Submissions refused because an engine queue stayed full."
_WALLET_COUNTERS = [
    ("wallet_ops", "ops", "Wallet operations answered."),
    ("wallet_ops_failed", "ops_failed", "Wallet operations answered with an error (business or other)."),
    ("wallet_replays", "replays", "Wallet operations answered from an idempotency record."),
    ("wallet_batches", "batches", "Wallet batches committed."),
    ("wallet_retries", "retries", "Wallet batch attempts retried (deadlock, serialization, lost connection)."),
]
_AUTH_COUNTERS = [
    ("auth_requests", "authentications", "API-key authentications asked for."),
    ("auth_failures", "failures", "Authentications refused (missing, unknown, revoked or malformed key)."),
    ("auth_cache_hits", "cache_hits", "Authentications answered by the in-process key cache."),
    ("auth_shared_cache_hits", "l2_hits", "Authentications answered by the shared cache in Redis."),
    ("auth_db_queries", "db_queries", "Key lookups that reached the database."),
]
# Tracing (docs/tracing.md): (name without _total, trace_stats() key, help).
_TRACE_COUNTERS = [
    ("traceparents_malformed", "malformed_traceparents", "Malformed traceparents ignored (process-wide)."),
    ("trace_records", "recorded", "Gate batch and writer commit records noted for spans."),
    ("trace_records_dropped", "dropped", "Trace records dropped because the buffer was full."),
]
# Coupon lifecycle calls: (outcome label, counters() key).
_COUPON_USE_HELP = "Coupon use calls by outcome (used, cancelled, refused: a use answered with an error)."
_COUPON_USES = [("used", "coupon_uses"), ("cancelled", "coupon_cancels"), ("refused", "coupon_uses_refused")]
# The standalone worker's counters (Worker.stats()): (name without _total, stats key, help). The
# first three are the series the engine's in-process writers export.
_HELP = {name: help_ for name, _, help_ in _COUNTERS}
_WORKER_COUNTERS = [
    ("grants_written", "grants_written", _HELP["grants_written"]),
    ("dead_lettered", "dead_lettered", _HELP["dead_lettered"]),
    ("writer_failures", "failures", _HELP["writer_failures"]),
    ("writer_batches", "batches", "Grant batches the standalone writer committed to PostgreSQL."),
    ("writer_claimed", "claimed", "Grant-log entries the writer took over from dead consumers."),
    ("replica_waits", "replica_waits", "WAITs the writer sent before inserting (replicas_acked > 0)."),
    ("replica_wait_shortfalls", "replica_wait_shortfalls", _HELP["replica_wait_shortfalls"]),
]
# The grant log's backlog: (name, LogBacklog field, scale, help); production only, by campaign.
_LOG_GAUGES = [
    ("log_entries", "entries", 1, "Entries in the campaign's grant log not yet settled (each holds 1..2,048 grants)."),
    ("log_pending", "pending", 1, "Grant-log entries delivered to a writer and not yet acknowledged."),
    (
        "log_oldest_pending_seconds",
        "oldest_pending_age_ms",
        1000,
        "Age of the oldest pending grant-log entry, on the Redis server's clock (0: none pending).",
    ),
    ("dead_letters", "dead_letters", 1, "Entries in the campaign's dead-letter stream (grants needing an operator)."),
    (
        "log_oldest_unread_seconds",
        "oldest_unread_age_ms",
        1000,
        "Age of the oldest grant-log entry no writer has read yet, on the Redis server's clock (0: none).",
    ),
]
_WRITERS_ALIVE_HELP = "Grant-writer consumers of the deployment with a heartbeat younger than writer_dead_after_ms."

# Series only a production engine exports (the embedded engine has no grant log).
PRODUCTION_ONLY_SERIES = frozenset(f"couponcore_{name}" for name, *_ in _LOG_GAUGES) | {"couponcore_writers_alive"}
_HISTOGRAMS = [
    ("issue_latency_seconds", "Time from submit to answer of an issue request."),
    ("batch_requests", "Requests per decision batch."),
    ("commit_grants", "Grants per durable write."),
]


def _fmt(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def snapshot(engine: Engine) -> dict[str, Any]:
    wallets = engine._wallets_native  # only when the wallets were opened; never opens them
    return {
        "counters": engine.counters(),
        "histograms": engine._core.histograms(),
        "kind": engine.kind,
        "auth": engine.auth_counters(),
        "trace": engine._core.trace_stats(),
        "wallet": wallets.counters() if wallets is not None and not wallets.closed else None,
        "log_backlog": _log_backlog(engine),
        "writers_alive": _writers_alive(engine),
        "events": _event_stats(engine),
        "windows": _windows_metrics(engine),
    }


def _windows_metrics(engine: Engine) -> list[tuple[str, str, str, float]]:
    """The live windows' series (docs/windows.md): the recorder's counters, and the aggregator's
    once ``engine.windows`` was opened (never opened here)."""
    out = list(recorder_metrics(engine._core.answer_counters()))
    if engine._windows is not None:
        out += engine._windows.metrics()
    return out


def _event_stats(engine: Engine) -> dict[str, Any] | None:
    """engine.events.stats(); None (no series) when the store does not answer."""
    try:
        return engine.events.stats()
    except Unavailable:
        return None


def _event_metrics(snap: dict[str, Any]) -> Iterator[tuple[str, str, str, float]]:
    """(counter | gauge, name, help, value) of the domain events' metrics (docs/events.md)."""
    ev = snap["events"]
    if ev is None:
        return
    yield "counter", "events_written", "Domain events written by the deployment (outbox / log sequence).", ev["written"]
    if snap["kind"] != "production":
        return
    yield "counter", "events_relayed", "Outbox rows this process's relay published and deleted.", ev["relayed"]
    yield "gauge", "events_outbox_rows", "Events in the outbox, not yet relayed.", ev["outbox_rows"]
    yield "gauge", "events_outbox_oldest_seconds", "Age of the oldest outbox row.", ev["outbox_oldest_age_ms"] / 1000
    yield "gauge", "events_relay_active", "1 while this process's relay is the active one.", int(ev["relay_active"])


def _writers_alive(engine: Engine) -> int | None:
    """Live writer consumers of the deployment; None (no series) when embedded or Redis is away."""
    if engine.kind != "production":
        return None
    try:
        return sum(1 for w in engine.writers(pending=False) if w.alive)
    except Unavailable:
        return None


def _log_backlog(engine: Engine) -> list[LogBacklog]:
    """The grant log's backlog; [] when Redis does not answer (the other metrics still go out)."""
    if engine.kind != "production":
        return []
    try:
        return engine.log_backlog()
    except Unavailable:
        return []


def _log_gauges(backlog: list[Any]) -> Iterator[tuple[str, str, list[tuple[str, float]]]]:
    """(name, help, [(campaign, value)]) of every backlog gauge; nothing without a grant log."""
    if not backlog:
        return
    for name, key, scale, help_ in _LOG_GAUGES:
        yield name, help_, [(str(b.campaign_id), getattr(b, key) / scale) for b in backlog]


def _counters(snap: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """(name without _total, help, value) of every plain counter in the snapshot."""
    for name, key, help_ in _COUNTERS:
        yield name, help_, snap["counters"][key]
    for name, key, help_ in _AUTH_COUNTERS:
        yield name, help_, snap["auth"][key]
    for name, key, help_ in _TRACE_COUNTERS:
        yield name, help_, snap["trace"][key]
    if snap["wallet"] is not None:
        for name, key, help_ in _WALLET_COUNTERS:
            yield name, help_, snap["wallet"][key]


def _queues(snap: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(queue, depth, refused) of every engine queue in the snapshot."""
    yield "issue", snap["counters"]["queued_requests"], snap["counters"]["queue_refused"]
    if snap["wallet"] is not None:
        yield "wallet", snap["wallet"]["queued_ops"], snap["wallet"]["queue_refused"]


def render(engine: Engine) -> str:
    """The engine's metrics in the Prometheus text exposition format (version 0.0.4)."""
    snap = snapshot(engine)
    c, h = snap["counters"], snap["histograms"]
    out: list[str] = []
    out.append("# HELP couponcore_issue_requests_total Issue decisions by outcome.")
    out.append("# TYPE couponcore_issue_requests_total counter")
    for status, n in c["by_status"].items():
        out.append(f'couponcore_issue_requests_total{{outcome="{status.lower()}"}} {n}')
    for name, help_, value in _counters(snap):
        out.append(f"# HELP couponcore_{name}_total {help_}")
        out.append(f"# TYPE couponcore_{name}_total counter")
        out.append(f"couponcore_{name}_total {value}")
    queues = list(_queues(snap))
    out.append(f"# HELP couponcore_queue_depth {_QUEUE_DEPTH_HELP}")
    out.append("# TYPE couponcore_queue_depth gauge")
    out.extend(f'couponcore_queue_depth{{queue="{q}"}} {depth}' for q, depth, _ in queues)
    out.append(f"# HELP couponcore_queue_refused_total {_QUEUE_REFUSED_HELP}")
    out.append("# TYPE couponcore_queue_refused_total counter")
    out.extend(f'couponcore_queue_refused_total{{queue="{q}"}} {refused}' for q, _, refused in queues)
    out.append(f"# HELP couponcore_coupon_uses_total {_COUPON_USE_HELP}")
    out.append("# TYPE couponcore_coupon_uses_total counter")
    out.extend(f'couponcore_coupon_uses_total{{outcome="{o}"}} {c[key]}' for o, key in _COUPON_USES)
    out.extend(_render_log_gauges(snap["log_backlog"]))
    if snap["writers_alive"] is not None:
        out.extend(_gauge("writers_alive", _WRITERS_ALIVE_HELP, snap["writers_alive"]))
    out.extend(_render_plain([*_event_metrics(snap), *snap["windows"]]))
    for name, help_ in _HISTOGRAMS:
        hist = h[name]
        out.append(f"# HELP couponcore_{name} {help_}")
        out.append(f"# TYPE couponcore_{name} histogram")
        bounds = [*hist["upper_bounds"], float("inf")]
        for bound, count in zip(bounds, hist["cumulative_counts"]):
            out.append(f'couponcore_{name}_bucket{{le="{_fmt(bound)}"}} {count}')
        out.append(f"couponcore_{name}_sum {_fmt(hist['sum'])}")
        out.append(f"couponcore_{name}_count {hist['count']}")
    jobs = engine._jobs  # the jobs this process ran (couponcore.jobs), never opened here
    if jobs is not None:
        out.extend(jobs.metrics_lines())
    return "\n".join(out) + "\n"


def _render_plain(metrics: list[tuple[str, str, str, float]]) -> Iterator[str]:
    """Text lines of unlabelled (counter | gauge, name, help, value) series."""
    for kind, name, help_, value in metrics:
        full = f"couponcore_{name}_total" if kind == "counter" else f"couponcore_{name}"
        yield from (f"# HELP {full} {help_}", f"# TYPE {full} {kind}", f"{full} {_fmt(value)}")


def _gauge(name: str, help_: str, value: float) -> list[str]:
    return [f"# HELP couponcore_{name} {help_}", f"# TYPE couponcore_{name} gauge", f"couponcore_{name} {_fmt(value)}"]


def _render_log_gauges(backlog: list[Any]) -> Iterator[str]:
    for name, help_, samples in _log_gauges(backlog):
        yield f"# HELP couponcore_{name} {help_}"
        yield f"# TYPE couponcore_{name} gauge"
        yield from (f'couponcore_{name}{{campaign="{cid}"}} {_fmt(v)}' for cid, v in samples)


def worker_log_backlog(worker: _core.Worker) -> list[LogBacklog]:
    """The grant log's backlog read by a standalone worker (``_core.Worker``); [] when Redis does
    not answer, as for an engine."""
    from ._types import LogBacklog, from_core

    try:
        return [from_core(LogBacklog, t) for t in worker.log_backlog()]
    except Unavailable:
        return []


def render_worker(worker: _core.Worker, *, threads: int, windows: Any = None) -> str:
    """The standalone writer's metrics (``couponcore worker --metrics-port``) in the Prometheus
    text format: its counters (``worker.stats()``), the breaker, the grant log's backlog, and
    (``windows``: the worker's live-windows aggregator, a ``WorkerWindows``) the aggregator's."""
    stats = worker.stats()
    out: list[str] = []
    for name, key, help_ in _WORKER_COUNTERS:
        out.append(f"# HELP couponcore_{name}_total {help_}")
        out.append(f"# TYPE couponcore_{name}_total counter")
        out.append(f"couponcore_{name}_total {stats[key]}")
    for name, help_, value in (
        ("worker_up", "1 while the standalone writer process runs.", 1),
        ("writer_threads", "Writer threads of the standalone writer.", threads),
        (
            "writer_breaker_open",
            "1 while the writer's circuit breaker is open (PostgreSQL failing).",
            int(stats["breaker_open"]),
        ),
    ):
        out.extend(_gauge(name, help_, value))
    out.extend(_render_log_gauges(worker_log_backlog(worker)))
    try:
        alive = worker.writers_alive()
    except Unavailable:
        pass  # Redis away: no series this scrape, like the backlog gauges
    else:
        out.extend(_gauge("writers_alive", _WRITERS_ALIVE_HELP, alive))
    if windows is not None:
        out.extend(_render_plain(list(aggregator_metrics(windows.source, windows.store, windows.active))))
    return "\n".join(out) + "\n"


class CouponcoreCollector:
    """A ``prometheus_client`` collector: ``REGISTRY.register(CouponcoreCollector(engine))``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> list[Any]:
        return []  # metrics are read at scrape time; nothing to pre-declare

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        if self._engine.closed:
            return
        snap = snapshot(self._engine)
        c, h = snap["counters"], snap["histograms"]
        fam = CounterMetricFamily("couponcore_issue_requests", "Issue decisions by outcome.", labels=["outcome"])
        for status, n in c["by_status"].items():
            fam.add_metric([status.lower()], n)
        yield fam
        for name, help_, value in _counters(snap):
            yield CounterMetricFamily(f"couponcore_{name}", help_, value=value)
        depth = GaugeMetricFamily("couponcore_queue_depth", _QUEUE_DEPTH_HELP, labels=["queue"])
        refused = CounterMetricFamily("couponcore_queue_refused", _QUEUE_REFUSED_HELP, labels=["queue"])
        for q, n_depth, n_refused in _queues(snap):
            depth.add_metric([q], n_depth)
            refused.add_metric([q], n_refused)
        yield depth
        yield refused
        uses = CounterMetricFamily("couponcore_coupon_uses", _COUPON_USE_HELP, labels=["outcome"])
        for o, key in _COUPON_USES:
            uses.add_metric([o], c[key])
        yield uses
        for name, help_, samples in _log_gauges(snap["log_backlog"]):
            gauge = GaugeMetricFamily(f"couponcore_{name}", help_, labels=["campaign"])
            for cid, v in samples:
                gauge.add_metric([cid], v)
            yield gauge
        if snap["writers_alive"] is not None:
            yield GaugeMetricFamily("couponcore_writers_alive", _WRITERS_ALIVE_HELP, value=snap["writers_alive"])
        for kind, name, help_, value in [*_event_metrics(snap), *snap["windows"]]:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"couponcore_{name}", help_, value=value)
        for name, help_ in _HISTOGRAMS:
            hist = h[name]
            bounds = [*hist["upper_bounds"], float("inf")]
            buckets = [(_fmt(b), n) for b, n in zip(bounds, hist["cumulative_counts"])]
            yield HistogramMetricFamily(f"couponcore_{name}", help_, buckets=buckets, sum_value=hist["sum"])
        if self._engine._jobs is not None:  # the jobs this process ran (couponcore.jobs)
            yield from self._engine._jobs.metrics_families()
