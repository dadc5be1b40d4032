"""The jobs' Prometheus metrics, kept by the process that runs the jobs.

- ``couponcore_job_runs_total{job_name,outcome}``            runs that ended: succeeded, failed (after
                                                        the last attempt), cancelled
- ``couponcore_job_duration_seconds{job_name}``              histogram of one attempt's duration
- ``couponcore_job_rows_total{job_name}``                    rows the job changed (its result's ``rows``)
- ``couponcore_job_last_success_timestamp_seconds{job_name}`` Unix time of the last success (seeded
                                                        from the job store when a runner starts)
- ``couponcore_job_schedule_interval_seconds{job_name}``     the job's cron interval (scheduled jobs)

An attempt that fails and is retried counts in the duration histogram only: a run is counted
once, with its final outcome. ``job_last_success_timestamp_seconds`` and the schedule interval
together give the "not run on schedule" alert (``time() - last_success > 2 * interval``).
Served by ``couponcore jobs worker --metrics-port``, and part of ``engine.metrics_text()`` and of
``CouponcoreCollector`` once the engine used ``engine.jobs``.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

OUTCOMES = ("succeeded", "failed", "cancelled")
DURATION_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


def _fmt(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class JobMetrics:
    """Thread-safe counters of the jobs this process ran."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], int] = {}
        self._rows: dict[str, int] = {}
        self._last_success: dict[str, float] = {}
        self._durations: dict[str, list[int]] = {}  # per bucket, then +Inf
        self._duration_sum: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self.active = False  # anything to export yet

    def set_intervals(self, intervals: dict[str, float]) -> None:
        with self._lock:
            self._intervals = dict(intervals)
            self.active = True

    def attempt(self, job: str, duration_s: float) -> None:
        with self._lock:
            self.active = True
            counts = self._durations.setdefault(job, [0] * (len(DURATION_BUCKETS_S) + 1))
            for i, bound in enumerate(DURATION_BUCKETS_S):
                if duration_s <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._duration_sum[job] = self._duration_sum.get(job, 0.0) + duration_s

    def ended(self, job: str, outcome: str, rows: int = 0, at: Optional[float] = None) -> None:
        assert outcome in OUTCOMES, outcome
        with self._lock:
            self.active = True
            self._runs[(job, outcome)] = self._runs.get((job, outcome), 0) + 1
            self._rows[job] = self._rows.get(job, 0) + max(0, int(rows))
            if outcome == "succeeded" and at is not None:
                self._last_success[job] = at

    def seed_last_success(self, job: str, at: float) -> None:
        """The last success recorded in the job store (a worker that just started exports when
        the job last succeeded anywhere, not nothing)."""
        with self._lock:
            if at > self._last_success.get(job, 0.0):
                self._last_success[job] = at

    def runs(self, job: str, outcome: str) -> int:
        with self._lock:
            return self._runs.get((job, outcome), 0)

    def lines(self) -> list[str]:
        """The metrics in the Prometheus text format; [] before anything ran or was scheduled."""
        with self._lock:
            if not self.active:
                return []
            out = [
                "# HELP couponcore_job_runs_total Job runs that ended, by final outcome.",
                "# TYPE couponcore_job_runs_total counter",
            ]
            jobs = sorted({j for j, _ in self._runs} | set(self._rows) | set(self._durations))
            for job in jobs:
                for outcome in OUTCOMES:
                    n = self._runs.get((job, outcome), 0)
                    out.append(f'couponcore_job_runs_total{{job_name="{job}",outcome="{outcome}"}} {n}')
            out += [
                "# HELP couponcore_job_duration_seconds Duration of one job attempt.",
                "# TYPE couponcore_job_duration_seconds histogram",
            ]
            for job, counts in sorted(self._durations.items()):
                for bound, n in zip((*DURATION_BUCKETS_S, float("inf")), counts):
                    out.append(f'couponcore_job_duration_seconds_bucket{{job_name="{job}",le="{_fmt(bound)}"}} {n}')
                out.append(f'couponcore_job_duration_seconds_sum{{job_name="{job}"}} {_fmt(self._duration_sum[job])}')
                out.append(f'couponcore_job_duration_seconds_count{{job_name="{job}"}} {counts[-1]}')
            out += [
                "# HELP couponcore_job_rows_total Rows changed by job runs.",
                "# TYPE couponcore_job_rows_total counter",
            ]
            out += [f'couponcore_job_rows_total{{job_name="{j}"}} {n}' for j, n in sorted(self._rows.items())]
            out += [
                "# HELP couponcore_job_last_success_timestamp_seconds Unix time of the job's last successful run.",
                "# TYPE couponcore_job_last_success_timestamp_seconds gauge",
            ]
            out += [
                f'couponcore_job_last_success_timestamp_seconds{{job_name="{j}"}} {_fmt(t)}'
                for j, t in sorted(self._last_success.items())
            ]
            out += [
                "# HELP couponcore_job_schedule_interval_seconds Interval of the job's cron schedule.",
                "# TYPE couponcore_job_schedule_interval_seconds gauge",
            ]
            out += [
                f'couponcore_job_schedule_interval_seconds{{job_name="{j}"}} {_fmt(s)}'
                for j, s in sorted(self._intervals.items())
            ]
            return out

    def families(self) -> list[Any]:
        """The same metrics as ``prometheus_client`` metric families (for CouponcoreCollector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            if not self.active:
                return []
            runs = CounterMetricFamily(
                "couponcore_job_runs", "Job runs that ended, by final outcome.", labels=["job_name", "outcome"]
            )
            for job in sorted({j for j, _ in self._runs} | set(self._rows) | set(self._durations)):
                for outcome in OUTCOMES:
                    runs.add_metric([job, outcome], self._runs.get((job, outcome), 0))
            duration = HistogramMetricFamily(
                "couponcore_job_duration_seconds", "Duration of one job attempt.", labels=["job_name"]
            )
            for job, counts in sorted(self._durations.items()):
                buckets = [(_fmt(b), n) for b, n in zip((*DURATION_BUCKETS_S, float("inf")), counts)]
                duration.add_metric([job], buckets, self._duration_sum[job])
            rows = CounterMetricFamily("couponcore_job_rows", "Rows changed by job runs.", labels=["job_name"])
            for job, n in sorted(self._rows.items()):
                rows.add_metric([job], n)
            last = GaugeMetricFamily(
                "couponcore_job_last_success_timestamp_seconds",
                "Unix time of the job's last successful run.",
                labels=["job_name"],
            )
            for job, t in sorted(self._last_success.items()):
                last.add_metric([job], t)
            interval = GaugeMetricFamily(
                "couponcore_job_schedule_interval_seconds", "Interval of the job's cron schedule.", labels=["job_name"]
            )
            for job, v in sorted(self._intervals.items()):
                interval.add_metric([job], v)
            return [runs, duration, rows, last, interval]

    def text(self) -> str:
        lines = self.lines()
        return "\n".join(lines) + "\n" if lines else ""
