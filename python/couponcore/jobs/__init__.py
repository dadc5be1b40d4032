"""couponcore's scheduled jobs on procrastinate (PostgreSQL task queue): docs/jobs.md.

    engine.jobs.run("expire_coupons")     engine.jobs.defer("reconcile")
    engine.jobs.list(state="failed")      engine.jobs.get(42).events
    engine.jobs.rerun(42)                 engine.jobs.cancel(43)
    engine.jobs.start_periodic()          # embedded / single box: the schedules in-process
    couponcore jobs worker --redis ... --postgres ... --metrics-port 9108   # production

Jobs: expire_coupons, expire_points, purge_idempotency, reconcile, redrive_dead_letters, prune_events,
bulk_grant (and purge_job_history, the retention of finished job rows). Needs the ``jobs`` extra:
``pip install 'couponcore[jobs]'``.
"""

from __future__ import annotations

from typing import Any

from ._api import JobEvent, JobRun, Jobs, Schedule
from ._config import DEFAULT_CRON, JOB_NAMES, RETENTION_JOB, JobPolicy, JobsConfig, load_config
from ._store import migrate

__all__ = [
    "DEFAULT_CRON",
    "JOB_NAMES",
    "RETENTION_JOB",
    "JobEvent",
    "JobPolicy",
    "JobRun",
    "Jobs",
    "JobsConfig",
    "Schedule",
    "load_config",
    "migrate",
    "worker_jobs",
]


def worker_jobs(engine: Any, config: Any = None, *, dsn: str) -> Jobs:
    """A :class:`Jobs` for a worker process: ``engine`` runs the job functions, ``dsn`` is the
    PostgreSQL that holds the jobs (``couponcore jobs worker`` uses this)."""
    return Jobs(engine, config, dsn=dsn)
