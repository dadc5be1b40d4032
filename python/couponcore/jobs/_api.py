"""``engine.jobs``: run, queue, inspect, re-run and cancel the maintenance jobs, and the
in-process periodic runner.

    engine.jobs.run("expire_coupons")            # now, in this process; returns the JobRun
    engine.jobs.defer("reconcile")               # queued for a worker (or the in-process runner)
    engine.jobs.list(state="failed")             # newest first
    engine.jobs.get(42).events                   # the per-job event log
    engine.jobs.rerun(42); engine.jobs.cancel(43)
    engine.jobs.start_periodic()                 # the schedules, run by this process
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
import json
import threading
from typing import TYPE_CHECKING, Any, Optional

from .. import _core
from ._config import (
    JOB_NAMES,
    RETENTION_JOB,
    ConfigLike,
    JobsConfig,
    check_job_name,
    cron_interval_s,
    cron_next,
    load_config,
)
from ._functions import check_args
from ._store import STATE_OF_STATUS, STATES_OF_STATE_KEYS, STATUSES_OF_STATE, TASK_PREFIX

if TYPE_CHECKING:
    from .._engine import Engine
    from ._runner import Runner

LIST_LIMIT_MAX = 1_000


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log: queued, started, progress, retry_scheduled, failed,
    succeeded, cancelled, cancel_requested, stalled, interrupted, rerun, log."""

    at: _dt.datetime
    type: str
    message: str


@dataclasses.dataclass(frozen=True)
class JobRun:
    """One job: its state, arguments, attempts, progress and event log (``events`` is empty in
    ``list()``; ``get()`` loads it)."""

    id: int
    name: str
    state: str  # queued | running | succeeded | failed | cancelled
    args: dict[str, Any]
    attempts: int
    progress_done: int
    progress_total: Optional[int]
    created_at: Optional[_dt.datetime]
    started_at: Optional[_dt.datetime]
    finished_at: Optional[_dt.datetime]
    error: Optional[str]
    events: list[JobEvent]
    result: Optional[dict[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("created_at", "started_at", "finished_at"):
            d[k] = d[k].isoformat() if d[k] else None
        d["events"] = [{"at": e.at.isoformat(), "type": e.type, "message": e.message} for e in self.events]
        return d


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A scheduled job: its cron string, interval, next firing and last run (if any)."""

    name: str
    cron: str
    interval_s: float
    next_run_at: _dt.datetime
    last_run_at: Optional[_dt.datetime]
    last_state: Optional[str]


def _ts(v: Any) -> Optional[_dt.datetime]:
    if v is None:
        return None
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=_dt.timezone.utc)
    return _dt.datetime.fromisoformat(str(v))


def _run_of(row: dict[str, Any]) -> JobRun:
    name = row["task_name"][len(TASK_PREFIX) :]
    state = STATE_OF_STATUS.get(row["status"], row["status"])
    result = row.get("result")
    if isinstance(result, str):
        result = json.loads(result)
    error = row.get("error")
    if state != "failed" and error == "cancelled":
        error = None
    events = [
        JobEvent(_ts(e["at"]) or _dt.datetime.now(_dt.timezone.utc), e["type"], e["message"])
        for e in row.get("events") or []
    ]
    return JobRun(
        id=int(row["id"]),
        name=name,
        state=state,
        args={k: v for k, v in dict(row["args"] or {}).items()},
        attempts=int(row["attempts"]),
        progress_done=int(row.get("progress_done") or 0),
        progress_total=None if row.get("progress_total") is None else int(row["progress_total"]),
        created_at=_ts(row.get("created_at")),
        started_at=_ts(row.get("started_at")),
        finished_at=_ts(row.get("finished_at")) if state in ("succeeded", "failed", "cancelled") else None,
        error=error if state == "failed" else None,
        events=events,
        result=result,
    )


def _check_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise _core.InvalidType(f"a job id is an int, got {type(job_id).__name__}")
    if not 1 <= job_id <= 2**63 - 1:
        raise _core.InvalidArgument("job ids are positive")
    return job_id


class Jobs:
    """The jobs of one engine (see the module docstring). Thread-safe. The production engine
    keeps its jobs in PostgreSQL (procrastinate), shared with every worker and engine on it; the
    embedded engine keeps them in this process (procrastinate's in-memory connector)."""

    def __init__(self, engine: Optional[Engine], config: ConfigLike = None, *, dsn: Optional[str] = None) -> None:
        try:
            import procrastinate  # noqa: F401
        except ImportError as e:  # the extra is missing
            raise _core.Unavailable(
                f"couponcore.jobs needs procrastinate: pip install 'couponcore[jobs]' ({e})"
            ) from None
        self._engine = engine
        self._config = load_config(config)
        self._dsn = dsn
        self._runner: Optional[Runner] = None
        self._lock = threading.Lock()

    # ---- configuration -------------------------------------------------------------------
    @property
    def config(self) -> JobsConfig:
        return self._config

    def configure(self, config: ConfigLike) -> JobsConfig:
        """Replace the schedules and policies (validated first: a bad one changes nothing).
        ``Conflict`` while the in-process runner runs: stop it first."""
        cfg = load_config(config)
        with self._lock:
            if self._runner is not None:
                self._runner.reconfigure(cfg)  # Conflict while the periodic runner runs
            self._config = cfg
        return cfg

    def _r(self) -> Runner:
        r = self._runner
        if r is not None:
            return r
        with self._lock:
            if self._runner is None:
                if self._engine is not None and self._engine.closed:
                    raise _core.Closed("the engine is closed")
                from ._runner import Runner

                self._runner = Runner(self._engine, self._config, self._dsn)
            return self._runner

    # ---- runs ----------------------------------------------------------------------------
    def _checked(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        check_job_name(name)
        if name == RETENTION_JOB:
            if args:
                raise _core.InvalidArgument(f"{RETENTION_JOB} takes no arguments (see [retention])")
            return {}
        return check_args(name, args)

    def run(self, name: str, **args: Any) -> JobRun:
        """Run ``name`` now, in this process, recorded like any run (retries wait their backoff
        here); returns the finished JobRun. ``Conflict`` if the same job runs elsewhere."""
        checked = self._checked(name, args)
        r = self._r()
        job_id = r.call(r.run_now(name, checked), None)
        return self.get(job_id)

    def defer(self, name: str, **args: Any) -> JobRun:
        """Queue ``name`` for a worker (``couponcore jobs worker``, or this engine's runner)."""
        checked = self._checked(name, args)
        r = self._r()
        return self.get(r.call(r.defer(name, checked)))

    def get(self, job_id: int) -> JobRun:
        """One job with its event log; ``NotFound`` if there is none (or it was purged)."""
        _check_id(job_id)
        r = self._r()
        row = r.call(r.store.get(job_id))
        if row is None:
            raise _core.NotFound(f"no job {job_id}")
        return _run_of(row)

    def list(
        self, *, state: Optional[str] = None, name: Optional[str] = None, limit: int = 50
    ) -> builtins.list[JobRun]:
        """Jobs, newest first, optionally of one state and one job name; ``limit`` 1..1,000."""
        if state is not None and state not in STATUSES_OF_STATE:
            raise _core.InvalidArgument(f"state must be one of {', '.join(STATES_OF_STATE_KEYS)}, got {state!r}")
        if name is not None:
            check_job_name(name)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise _core.InvalidType("limit must be an int")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise _core.InvalidArgument(f"limit must be in 1..{LIST_LIMIT_MAX}")
        r = self._r()
        statuses = STATUSES_OF_STATE[state] if state else None
        rows = r.call(r.store.list(statuses, None if name is None else TASK_PREFIX + name, limit))
        return [_run_of(row) for row in rows]

    def rerun(self, job_id: int) -> JobRun:
        """A new run of a failed or cancelled job, with the same arguments (a bulk grant resumes
        from its checkpoint: same job key). Queued for a worker; ``Conflict`` for other states."""
        old = self.get(job_id)
        if old.state not in ("failed", "cancelled"):
            raise _core.Conflict(f"job {job_id} is {old.state}: only failed or cancelled jobs are re-run")
        r = self._r()
        args = {k: v for k, v in old.args.items() if k != "timestamp"}
        new_id = r.call(r.defer(old.name, args, event=f"re-run of job {job_id}"))
        r.call(r.store.event(job_id, "rerun", f"re-run as job {new_id}"))
        return self.get(new_id)

    def cancel(self, job_id: int) -> JobRun:
        """Cancel a queued job (at once) or a running one (it stops at its next check, between
        chunks); ``Conflict`` for a job that has ended."""
        run = self.get(job_id)
        if run.state not in ("queued", "running"):
            raise _core.Conflict(f"job {job_id} is {run.state}: only queued or running jobs can be cancelled")
        r = self._r()
        if not r.call(r.cancel(job_id)):
            raise _core.Conflict(f"job {job_id} ended before it could be cancelled")
        return self.get(job_id)

    def schedules(self) -> builtins.list[Schedule]:
        """Every scheduled job (cron from the configuration) with its next and last run."""
        out = []
        for name, cron in self._config.schedules().items():
            last = self.list(name=name, limit=1)
            out.append(
                Schedule(
                    name=name,
                    cron=cron,
                    interval_s=cron_interval_s(cron),
                    next_run_at=_dt.datetime.fromtimestamp(cron_next(cron), _dt.timezone.utc),
                    last_run_at=(last[0].started_at or last[0].created_at) if last else None,
                    last_state=last[0].state if last else None,
                )
            )
        return out

    # ---- the in-process periodic runner ----------------------------------------------------
    def start_periodic(self, config: ConfigLike = None) -> None:
        """Run the scheduled jobs (and any queued ones) in this process, on a background thread,
        until :meth:`stop_periodic` or the engine closes. ``config`` replaces the configuration
        first. ``Conflict`` if it runs already."""
        if config is not None:
            self.configure(config)
        self._r().start_worker("couponcore-periodic")

    def stop_periodic(self) -> None:
        """Stop the in-process runner after the job in hand."""
        r = self._runner
        if r is not None and r.worker_running:
            r.stop_worker()

    @property
    def periodic_running(self) -> bool:
        r = self._runner
        return r is not None and r.worker_running

    def recover_stalled(self) -> builtins.list[int]:
        """Re-queue running jobs whose worker stopped sending heartbeats (the runner does this on
        its own every ``stalled_after_s / 2``); returns their ids."""
        r = self._r()
        return r.call(r.recover_stalled())

    def metrics_text(self) -> str:
        """The jobs' metrics of this process (Prometheus text; "" before anything ran)."""
        r = self._runner
        return r.metrics.text() if r is not None else ""

    def metrics_lines(self) -> builtins.list[str]:
        r = self._runner
        return r.metrics.lines() if r is not None else []

    def metrics_families(self) -> builtins.list[Any]:
        r = self._runner
        return r.metrics.families() if r is not None else []

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.close()
                self._runner = None

    @staticmethod
    def names() -> tuple[str, ...]:
        return JOB_NAMES
