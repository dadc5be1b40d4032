"""The live windows' metrics (docs/windows.md, docs/alerts.md), for ``couponcore.metrics``:
(kind, name without ``couponcore_`` and ``_total``, help, value) tuples.

Recorder (every engine that records answers, since it opened): answers recorded, records
flushed, flush failures, records and answers dropped, the event clock's offset. Aggregator (an
engine whose ``engine.windows`` is open, or ``couponcore worker``): its lag (now minus the flush
time of the oldest record not yet aggregated, 0 when caught up), the deployment's late answers,
and (worker) whether this process is the active aggregator.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, Optional

from .. import _core

Metric = tuple[str, str, str, float]

_RECORDER = [
    ("counter", "windows_answers_recorded", "answers", "Answers the live windows' recorder counted."),
    ("counter", "windows_records_flushed", "records", "Answer records appended to the answer source (ticks included)."),
    ("counter", "windows_flush_failures", "flush_failures", "Answer-record appends that failed (kept, retried)."),
    (
        "counter",
        "windows_records_dropped",
        "records_dropped",
        "Answer records dropped: too many waited to be appended.",
    ),
    ("counter", "windows_answers_dropped", "answers_dropped", "Answers in dropped records (in no window)."),
]


def recorder_metrics(counters: Optional[dict[str, int]]) -> Iterator[Metric]:
    if counters is None:
        return
    for kind, name, key, help_ in _RECORDER:
        yield kind, name, help_, counters[key]
    yield (
        "gauge",
        "windows_clock_offset_seconds",
        "The answers' event clock minus this host's wall clock (production: the gate's Redis TIME).",
        counters["clock_offset_us"] / 1e6,
    )


def aggregator_lag_s(source: Any, state: Optional[dict[str, Any]], now_s: Optional[float] = None) -> float:
    """Now minus the flush time of the oldest record not yet aggregated (0: caught up)."""
    positions = state["positions"] if state else {}
    now_ms = (time.time() if now_s is None else now_s) * 1000
    lag_ms = 0.0
    for partition in source.partitions():
        got = source.read(partition, positions.get(partition, ""), 1)
        if got:
            parts = got[0][2].split(" ")
            if len(parts) > 1 and parts[1].isdigit():
                lag_ms = max(lag_ms, now_ms - int(parts[1]))
    return lag_ms / 1000


def aggregator_metrics(source: Any, store: Any, active: Optional[bool] = None) -> Iterator[Metric]:
    """The aggregator's series; nothing when the store or the source does not answer."""
    try:
        _, text = store.load()
        state = json.loads(text) if text else None
        lag = aggregator_lag_s(source, state)
    except (_core.Error, OSError, ValueError, sqlite3.Error, *store.driver_errors):
        return  # the store or the source is away: the other series still go out
    late = sum(int(c["late"]) for c in state["campaigns"].values()) if state else 0
    yield (
        "gauge",
        "windows_aggregator_lag_seconds",
        "Now minus the flush time of the oldest answer record not yet aggregated.",
        lag,
    )
    yield (
        "counter",
        "windows_late_answers",
        "Answers that came after their window was final (the deployment's, dropped).",
        late,
    )
    if active is not None:
        yield (
            "gauge",
            "windows_aggregator_active",
            "1 while this process is the deployment's active aggregator.",
            int(active),
        )
