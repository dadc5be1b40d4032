"""Where job runs are recorded: procrastinate's own tables plus two of ours.

procrastinate keeps a job's state, arguments, attempts and state changes (``procrastinate_jobs``,
``procrastinate_events``). What it does not keep -- progress, the error of a failed attempt, the
result, the retry that was scheduled -- goes into ``couponcore_job_runs`` (one row per job) and
``couponcore_job_events`` (the per-job event log), both deleted with their job (``ON DELETE
CASCADE``), so the retention purge of procrastinate's rows takes ours along.

Two implementations of one interface, both used only on the runner's event loop:
:class:`PgStore` (production: SQL through procrastinate's psycopg connector) and
:class:`MemoryStore` (embedded: procrastinate's ``InMemoryConnector`` plus dicts).

Entry points: ``migrate(dsn)`` (schema, idempotent), ``PgStore`` / ``MemoryStore``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Optional

from .. import _core

TASK_PREFIX = "couponcore."  # every task of ours is named couponcore.<job>
STATE_OF_STATUS = {
    "todo": "queued",
    "doing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "aborting": "running",
    "aborted": "cancelled",
}
STATUSES_OF_STATE = {
    "queued": ["todo"],
    "running": ["doing", "aborting"],
    "succeeded": ["succeeded"],
    "failed": ["failed"],
    "cancelled": ["cancelled", "aborted"],
}
STATES_OF_STATE_KEYS = tuple(STATUSES_OF_STATE)
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "aborted")
EVENTS_MAX = 1_000  # progress and log events kept per job; state changes are always kept
THINNED_EVENTS = ("progress", "log")
MESSAGE_CHARS_MAX = 2_000

_OUR_TABLES = """
CREATE TABLE IF NOT EXISTS couponcore_jobs_schema (
    id int PRIMARY KEY CHECK (id = 1),
    procrastinate_version text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS couponcore_job_runs (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs(id) ON DELETE CASCADE,
    progress_done bigint NOT NULL DEFAULT 0,
    progress_total bigint,
    started_at timestamptz,
    finished_at timestamptz,
    error text,
    result jsonb
);
CREATE TABLE IF NOT EXISTS couponcore_job_events (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES procrastinate_jobs(id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    message text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS couponcore_job_events_job_id ON couponcore_job_events (job_id, id);
"""
_MIGRATE_LOCK = 0x6A6F6273  # pg_advisory_xact_lock key: "jobs"


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def migrate(dsn: str) -> int:
    """Apply procrastinate's schema and couponcore's job tables to the database at ``dsn``,
    idempotently (under an advisory lock: concurrent callers wait, then find it done). A database
    holding an older procrastinate schema gets the procrastinate migrations in between. Returns
    the number of steps applied (0: up to date)."""
    import procrastinate
    import psycopg
    from procrastinate.schema import SchemaManager

    installed = procrastinate.__version__
    try:
        conn = psycopg.connect(dsn, autocommit=False)
    except psycopg.Error as e:
        raise _core.Unavailable(f"jobs: cannot connect to PostgreSQL: {e}") from None
    steps = 0
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            cur.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
            row = cur.fetchone()
            has_jobs = bool(row and row[0])
            cur.execute("SELECT to_regclass('couponcore_jobs_schema') IS NOT NULL")
            row = cur.fetchone()
            applied: Optional[str] = None
            if row and row[0]:
                cur.execute("SELECT procrastinate_version FROM couponcore_jobs_schema WHERE id = 1")
                r = cur.fetchone()
                applied = r[0] if r else None
            if not has_jobs:
                cur.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
                steps += 1
            elif applied is not None and _version_tuple(applied) < _version_tuple(installed):
                import pathlib

                for f in sorted(pathlib.Path(SchemaManager.get_migrations_path()).glob("*.sql")):
                    v = _version_tuple(f.name.split("_")[0])
                    if _version_tuple(applied) < v <= _version_tuple(installed):
                        cur.execute(f.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                        steps += 1
            cur.execute(_OUR_TABLES)  # type: ignore[arg-type]
            if applied != installed:
                cur.execute(
                    "INSERT INTO couponcore_jobs_schema (id, procrastinate_version) VALUES (1, %s) "
                    "ON CONFLICT (id) DO UPDATE SET procrastinate_version = EXCLUDED.procrastinate_version, "
                    "applied_at = now()",
                    (installed,),
                )
                steps += 1 if applied is not None or has_jobs else 0
    except psycopg.Error as e:
        raise _core.Unavailable(f"jobs: could not apply the jobs schema: {e}") from None
    finally:
        conn.close()
    return steps


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARS_MAX else message[: MESSAGE_CHARS_MAX - 1] + "…"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class PgStore:
    """Runs and events in PostgreSQL, through procrastinate's connector (its pool)."""

    def __init__(self, connector: Any) -> None:
        self._c = connector

    async def check(self) -> None:
        row = await self._c.execute_query_one_async(
            "SELECT to_regclass('couponcore_job_events') IS NOT NULL AS ok"  # type: ignore[arg-type]
        )
        if not row["ok"]:
            raise _core.Unavailable("jobs: the jobs schema is missing: run `couponcore migrate` (or open with migrate)")

    async def event(self, job_id: int, type_: str, message: str = "") -> None:
        await self._c.execute_query_async(
            "INSERT INTO couponcore_job_events (job_id, type, message) SELECT %(id)s, %(t)s, %(m)s "  # type: ignore[arg-type]
            "WHERE %(t)s <> ALL(%(thinned)s::text[]) "
            "OR (SELECT count(*) FROM couponcore_job_events WHERE job_id = %(id)s) < %(max)s",
            thinned=list(THINNED_EVENTS),
            id=job_id,
            t=type_,
            m=_clip(message),
            max=EVENTS_MAX,
        )

    async def started(self, job_id: int) -> None:
        await self._c.execute_query_async(
            "INSERT INTO couponcore_job_runs (job_id, started_at) VALUES (%(id)s, now()) "  # type: ignore[arg-type]
            "ON CONFLICT (job_id) DO UPDATE SET started_at = now(), finished_at = NULL",
            id=job_id,
        )

    async def progress(self, job_id: int, done: int, total: Optional[int]) -> None:
        await self._c.execute_query_async(
            "INSERT INTO couponcore_job_runs (job_id, progress_done, progress_total) "  # type: ignore[arg-type]
            "VALUES (%(id)s, %(d)s, %(t)s) ON CONFLICT (job_id) DO UPDATE "
            "SET progress_done = EXCLUDED.progress_done, progress_total = EXCLUDED.progress_total",
            id=job_id,
            d=done,
            t=total,
        )

    async def finished(self, job_id: int, error: Optional[str], result: Optional[dict[str, Any]]) -> None:
        await self._c.execute_query_async(
            "INSERT INTO couponcore_job_runs (job_id, finished_at, error, result) "  # type: ignore[arg-type]
            "VALUES (%(id)s, now(), %(e)s, %(r)s::jsonb) ON CONFLICT (job_id) DO UPDATE "
            "SET finished_at = now(), error = EXCLUDED.error, result = EXCLUDED.result",
            id=job_id,
            e=None if error is None else _clip(error),
            r=None if result is None else json.dumps(result, default=str),
        )

    _SELECT = """
        SELECT j.id, j.task_name, j.status::text AS status, j.args, j.attempts, j.queue_name,
               r.progress_done, r.progress_total, r.started_at, r.finished_at, r.error, r.result,
               (SELECT min(e.at) FROM procrastinate_events e
                 WHERE e.job_id = j.id AND e.type = 'deferred') AS created_at
          FROM procrastinate_jobs j LEFT JOIN couponcore_job_runs r ON r.job_id = j.id
    """

    async def get(self, job_id: int) -> Optional[dict[str, Any]]:
        from procrastinate import exceptions

        try:
            row = await self._c.execute_query_one_async(
                self._SELECT + " WHERE j.id = %(id)s AND starts_with(j.task_name, 'couponcore.')",  # type: ignore[operator]
                id=job_id,
            )
        except exceptions.NoResult:
            return None
        if row is None or row.get("id") is None:
            return None
        events = await self._c.execute_query_all_async(
            "SELECT at, type, message FROM couponcore_job_events WHERE job_id = %(id)s ORDER BY id",  # type: ignore[arg-type]
            id=job_id,
        )
        out = dict(row)
        out["events"] = [dict(e) for e in events]
        return out

    async def list(self, statuses: Optional[list[str]], task: Optional[str], limit: int) -> list[dict[str, Any]]:
        rows = await self._c.execute_query_all_async(
            self._SELECT  # type: ignore[operator]
            + """ WHERE starts_with(j.task_name, 'couponcore.')
                   AND (%(task)s::text IS NULL OR j.task_name = %(task)s)
                   AND (%(st)s::text[] IS NULL OR j.status::text = ANY(%(st)s::text[]))
                 ORDER BY j.id DESC LIMIT %(limit)s""",
            task=task,
            st=statuses,
            limit=limit,
        )
        out = []
        for r in rows:
            d = dict(r)
            d["events"] = None  # loaded by get()
            out.append(d)
        return out

    async def purge(self, succeeded_s: float, failed_s: float) -> int:
        rows = await self._c.execute_query_all_async(
            """
            WITH done AS (
                SELECT j.id, j.status,
                       COALESCE(r.finished_at,
                                (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)) AS at
                  FROM procrastinate_jobs j LEFT JOIN couponcore_job_runs r ON r.job_id = j.id
                 WHERE starts_with(j.task_name, 'couponcore.')
                   AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
            DELETE FROM procrastinate_jobs WHERE id IN (
                SELECT id FROM done
                 WHERE (status = 'succeeded' AND at < now() - make_interval(secs => %(s)s))
                    OR (status <> 'succeeded' AND at < now() - make_interval(secs => %(f)s)))
            RETURNING id""",  # type: ignore[arg-type]
            s=succeeded_s,
            f=failed_s,
        )
        return len(rows)


class MemoryStore:
    """Runs and events in this process (the embedded runner): procrastinate's InMemoryConnector
    holds the jobs, these dicts the rest. Everything is lost when the process ends; the jobs'
    effects are in the engine's SQLite file and every job is idempotent, so nothing is lost but
    the history."""

    def __init__(self, connector: Any) -> None:
        self._c = connector
        self._runs: dict[int, dict[str, Any]] = {}
        self._events: dict[int, list[dict[str, Any]]] = {}

    async def check(self) -> None:
        return None

    def _run(self, job_id: int) -> dict[str, Any]:
        return self._runs.setdefault(
            job_id,
            {
                "progress_done": 0,
                "progress_total": None,
                "started_at": None,
                "finished_at": None,
                "error": None,
                "result": None,
            },
        )

    async def event(self, job_id: int, type_: str, message: str = "") -> None:
        events = self._events.setdefault(job_id, [])
        if type_ not in THINNED_EVENTS or len(events) < EVENTS_MAX:
            events.append({"at": _now(), "type": type_, "message": _clip(message)})

    async def started(self, job_id: int) -> None:
        r = self._run(job_id)
        r["started_at"], r["finished_at"] = _now(), None

    async def progress(self, job_id: int, done: int, total: Optional[int]) -> None:
        r = self._run(job_id)
        r["progress_done"], r["progress_total"] = done, total

    async def finished(self, job_id: int, error: Optional[str], result: Optional[dict[str, Any]]) -> None:
        r = self._run(job_id)
        r["finished_at"], r["error"], r["result"] = _now(), None if error is None else _clip(error), result

    def _row(self, job: dict[str, Any], with_events: bool) -> dict[str, Any]:
        run = self._run(job["id"])
        deferred = [e["at"] for e in self._c.events.get(job["id"], []) if e["type"] == "deferred"]
        return {
            "id": job["id"],
            "task_name": job["task_name"],
            "status": job["status"],
            "args": job["args"],
            "attempts": job["attempts"],
            "queue_name": job["queue_name"],
            **run,
            "created_at": min(deferred) if deferred else None,
            "events": list(self._events.get(job["id"], [])) if with_events else None,
        }

    async def get(self, job_id: int) -> Optional[dict[str, Any]]:
        job = self._c.jobs.get(job_id)
        if job is None or not job["task_name"].startswith(TASK_PREFIX):
            return None
        return self._row(job, True)

    async def list(self, statuses: Optional[list[str]], task: Optional[str], limit: int) -> list[dict[str, Any]]:
        out = []
        for job_id in sorted(self._c.jobs, reverse=True):
            job = self._c.jobs[job_id]
            if not job["task_name"].startswith(TASK_PREFIX):
                continue
            if task is not None and job["task_name"] != task:
                continue
            if statuses is not None and job["status"] not in statuses:
                continue
            out.append(self._row(job, False))
            if len(out) >= limit:
                break
        return out

    async def purge(self, succeeded_s: float, failed_s: float) -> int:
        now = _now()
        gone = 0
        for job_id, job in list(self._c.jobs.items()):
            if not job["task_name"].startswith(TASK_PREFIX) or job["status"] not in FINAL_STATUSES:
                continue
            at = self._run(job_id)["finished_at"] or max((e["at"] for e in self._c.events.get(job_id, [])), default=now)
            keep_s = succeeded_s if job["status"] == "succeeded" else failed_s
            if (now - at).total_seconds() > keep_s:
                self._c.jobs.pop(job_id, None)
                self._c.events.pop(job_id, None)
                self._runs.pop(job_id, None)
                self._events.pop(job_id, None)
                gone += 1
        return gone
