"""Job schedules and policies as configuration: a dict, a TOML file or a YAML file.

    [jobs.expire_coupons]                 # one table per job; every key is optional
    cron = "*/5 * * * *"                  # 5 fields, or 6 (the 6th: seconds); "" = no schedule
    args = { chunk_rows = 1000 }          # keyword arguments of the scheduled run
    max_attempts = 5                      # attempts in all (1 = no retry)

    [retry]                               # exponential backoff with jitter, every job
    base_s = 2.0                          # the first retry waits base_s/2 .. base_s
    max_s = 300.0                         # no wait is longer than this

    [retention]                           # purge of finished job rows, itself periodic
    cron = "41 * * * *"
    succeeded_s = 604800                  # keep succeeded runs 7 days
    failed_s = 2592000                    # keep failed and cancelled runs 30 days

    [worker]
    heartbeat_s = 10.0                    # a worker's heartbeat in PostgreSQL
    stalled_after_s = 30.0                # a running job whose worker is silent this long is re-queued
    poll_s = 5.0                          # fallback poll for new jobs (LISTEN/NOTIFY wakes it sooner)

Cron strings are croniter's (procrastinate's scheduler): five fields, or six where the sixth is
seconds (``"* * * * * */5"``: every 5 s). Validation happens in :func:`load_config`, before anything
is scheduled: a malformed cron is ``InvalidArgument``, an unknown job ``NotFound``, an unknown key
``InvalidArgument``; the caller's configuration is then left as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Optional, Union

from .. import _core

# The maintenance jobs and the bulk grant, in the order the docs list them.
JOB_NAMES = (
    "expire_coupons",
    "expire_points",
    "purge_idempotency",
    "reconcile",
    "redrive_dead_letters",
    "bulk_grant",
    "prune_events",
)
# Default schedules ("" = run on demand only). Re-driving dead letters is not scheduled by default:
# an entry that keeps failing would be redelivered again and again; an operator turns it on once
# the cause of the failures is fixed (or runs it by hand).
DEFAULT_CRON = {
    "expire_coupons": "*/5 * * * *",
    "expire_points": "7 * * * *",
    "purge_idempotency": "23 3 * * *",
    "reconcile": "*/15 * * * *",
    "redrive_dead_letters": "",
    "bulk_grant": "",
    "prune_events": "53 * * * *",
}
RETENTION_JOB = "purge_job_history"  # the retention purge, scheduled like the others
_CRON_FIELDS = (5, 6)
_MAX_ATTEMPTS_MAX = 100
_SECONDS_MAX = 10 * 365 * 86_400.0


@dataclasses.dataclass(frozen=True)
class JobPolicy:
    """One job's schedule and retry limit."""

    name: str
    cron: str  # "" = on demand only
    args: dict[str, Any]
    max_attempts: int


@dataclasses.dataclass(frozen=True)
class JobsConfig:
    """A validated jobs configuration (see the module docstring for the keys)."""

    jobs: dict[str, JobPolicy]
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    retention_cron: str = "41 * * * *"
    retention_succeeded_s: float = 7 * 86_400.0
    retention_failed_s: float = 30 * 86_400.0
    heartbeat_s: float = 10.0
    stalled_after_s: float = 30.0
    poll_s: float = 5.0

    def policy(self, name: str) -> JobPolicy:
        check_job_name(name)
        return self.jobs[name]

    def schedules(self) -> dict[str, str]:
        """Job name -> cron of every scheduled job, the retention purge included."""
        out = {name: p.cron for name, p in self.jobs.items() if p.cron}
        if self.retention_cron:
            out[RETENTION_JOB] = self.retention_cron
        return out


def check_job_name(name: object) -> str:
    if not isinstance(name, str):
        raise _core.InvalidType(f"a job name is a str, got {type(name).__name__}")
    if name not in JOB_NAMES and name != RETENTION_JOB:
        raise _core.NotFound(f"no job named {name!r} (jobs: {', '.join(JOB_NAMES)})")
    return name


def check_cron(cron: object, what: str) -> str:
    """A cron string croniter accepts (5 fields, or 6 with seconds), or "" for none."""
    if not isinstance(cron, str):
        raise _core.InvalidType(f"{what}: a cron string is a str, got {type(cron).__name__}")
    cron = cron.strip()
    if cron == "":
        return cron
    import croniter

    if len(cron) > 200 or len(cron.split()) not in _CRON_FIELDS or not croniter.croniter.is_valid(cron):
        raise _core.InvalidArgument(f"{what}: {cron!r} is not a valid cron string (5 fields, or 6 with seconds)")
    try:
        croniter.croniter(cron, time.time()).get_next(float)
    except Exception as e:  # croniter raises its own errors for impossible dates
        raise _core.InvalidArgument(f"{what}: {cron!r} never fires ({e})") from None
    return cron


def cron_interval_s(cron: str, now: Optional[float] = None) -> float:
    """Seconds between the next two firings of ``cron`` (the schedule interval metric)."""
    import croniter

    it = croniter.croniter(cron, time.time() if now is None else now)
    first = it.get_next(float)
    return float(it.get_next(float) - first)


def cron_next(cron: str, after: Optional[float] = None) -> float:
    import croniter

    return float(croniter.croniter(cron, time.time() if after is None else after).get_next(float))


def _seconds(value: object, what: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _core.InvalidType(f"{what} must be a number of seconds")
    if not math.isfinite(value) or not minimum <= value <= _SECONDS_MAX:
        raise _core.InvalidArgument(f"{what} must be within {minimum}..{_SECONDS_MAX:.0f} s, got {value}")
    return float(value)


def _table(value: object, what: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _core.InvalidType(f"{what} must be a table (dict)")
    unknown = set(value) - keys
    if unknown:
        raise _core.InvalidArgument(f"{what}: unknown keys {sorted(unknown)} (known: {sorted(keys)})")
    return value


def _read_file(path: Union[str, os.PathLike[str]]) -> Mapping[str, Any]:
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _core.InvalidArgument(f"cannot read the jobs configuration {p!r}: {e.strerror}") from None
    if p.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise _core.InvalidArgument("a YAML jobs configuration needs PyYAML (pip install pyyaml)") from None
        try:
            loaded = yaml.safe_load(data) or {}
        except yaml.YAMLError as e:
            raise _core.InvalidArgument(f"{p}: not valid YAML: {e}") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise _core.InvalidArgument("a TOML jobs configuration needs Python 3.11 or tomli") from None
        try:
            loaded = tomllib.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise _core.InvalidArgument(f"{p}: not valid TOML: {e}") from None
    if not isinstance(loaded, Mapping):
        raise _core.InvalidType(f"{p}: the configuration must be a table")
    return loaded


ConfigLike = Union[None, JobsConfig, Mapping[str, Any], str, "os.PathLike[str]"]


def load_config(source: ConfigLike = None) -> JobsConfig:
    """A :class:`JobsConfig` from a dict, a ``.toml`` / ``.yaml`` path, or the defaults (None).
    Everything is checked before anything is returned; the source is never modified."""
    if isinstance(source, JobsConfig):
        return source
    raw: Mapping[str, Any]
    if source is None:
        raw = {}
    elif isinstance(source, (str, os.PathLike)):
        raw = _read_file(source)
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        raise _core.InvalidType(f"a jobs configuration is a dict or a file path, got {type(source).__name__}")
    top = _table(raw, "jobs configuration", {"jobs", "retry", "retention", "worker"})
    jobs_raw = top.get("jobs", {})
    if not isinstance(jobs_raw, Mapping):
        raise _core.InvalidType("[jobs] must be a table of job tables")
    for name in jobs_raw:
        if name not in JOB_NAMES:
            raise _core.NotFound(f"[jobs.{name}]: no job named {name!r} (jobs: {', '.join(JOB_NAMES)})")
    jobs: dict[str, JobPolicy] = {}
    for name in JOB_NAMES:
        t = _table(jobs_raw.get(name, {}), f"[jobs.{name}]", {"cron", "args", "max_attempts", "enabled"})
        cron = check_cron(t.get("cron", DEFAULT_CRON[name]), f"[jobs.{name}] cron")
        enabled = t.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _core.InvalidType(f"[jobs.{name}] enabled must be true or false")
        args = t.get("args", {})
        if not isinstance(args, Mapping):
            raise _core.InvalidType(f"[jobs.{name}] args must be a table")
        attempts = t.get("max_attempts", 5)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise _core.InvalidType(f"[jobs.{name}] max_attempts must be an int")
        if not 1 <= attempts <= _MAX_ATTEMPTS_MAX:
            raise _core.InvalidArgument(f"[jobs.{name}] max_attempts must be in 1..{_MAX_ATTEMPTS_MAX}")
        from ._functions import check_args

        args = check_args(name, dict(args), complete=bool(cron and enabled))
        jobs[name] = JobPolicy(name, cron if enabled else "", args, attempts)
    retry = _table(top.get("retry", {}), "[retry]", {"base_s", "max_s"})
    retention = _table(top.get("retention", {}), "[retention]", {"cron", "succeeded_s", "failed_s"})
    worker = _table(top.get("worker", {}), "[worker]", {"heartbeat_s", "stalled_after_s", "poll_s"})
    d = JobsConfig(jobs={})
    cfg = JobsConfig(
        jobs=jobs,
        retry_base_s=_seconds(retry.get("base_s", d.retry_base_s), "[retry] base_s", 0.001),
        retry_max_s=_seconds(retry.get("max_s", d.retry_max_s), "[retry] max_s", 0.001),
        retention_cron=check_cron(retention.get("cron", d.retention_cron), "[retention] cron"),
        retention_succeeded_s=_seconds(
            retention.get("succeeded_s", d.retention_succeeded_s), "[retention] succeeded_s"
        ),
        retention_failed_s=_seconds(retention.get("failed_s", d.retention_failed_s), "[retention] failed_s"),
        heartbeat_s=_seconds(worker.get("heartbeat_s", d.heartbeat_s), "[worker] heartbeat_s", 0.1),
        stalled_after_s=_seconds(worker.get("stalled_after_s", d.stalled_after_s), "[worker] stalled_after_s", 0.5),
        poll_s=_seconds(worker.get("poll_s", d.poll_s), "[worker] poll_s", 0.05),
    )
    if cfg.retry_max_s < cfg.retry_base_s:
        raise _core.InvalidArgument("[retry] max_s must be at least base_s")
    if cfg.stalled_after_s <= cfg.heartbeat_s:
        raise _core.InvalidArgument("[worker] stalled_after_s must be longer than heartbeat_s")
    return cfg
