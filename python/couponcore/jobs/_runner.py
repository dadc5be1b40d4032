"""The runner: procrastinate's App, worker and scheduler driving the job functions.

One :class:`Runner` per engine (or per ``couponcore jobs worker``). It owns a private thread with
an asyncio event loop on which everything procrastinate does runs: the worker, the periodic
deferrer, stall recovery and every query of the API (``Jobs`` calls :meth:`Runner.call` from any
thread). The job functions are synchronous (the engine's calls block and release the GIL), so
procrastinate runs them in a worker thread; their progress and cancellation checks come back to
the loop through ``call``.

- production: ``PsycopgConnector`` on the engine's PostgreSQL (procrastinate's tables + ours);
- embedded: procrastinate's ``InMemoryConnector`` -- the same states, retries, locks and
  periodic scheduling, in this process (docs/jobs.md says why).

Entry points: Runner(engine, config, dsn=None), .call(coro), .run_now(name, args), .defer(...),
.start_worker(), .stop_worker(), .close().
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from procrastinate import retry as _pretry

from .. import _core
from ._config import RETENTION_JOB, JobsConfig, cron_interval_s
from ._functions import FUNCTIONS
from ._metrics import JobMetrics
from ._store import FINAL_STATUSES, TASK_PREFIX, MemoryStore, PgStore

if TYPE_CHECKING:
    from .._engine import Engine

log = logging.getLogger("couponcore.jobs")
T = TypeVar("T")
QUEUE = "couponcore"  # the queue every worker of ours listens to
# One private queue per run-now call. Short: procrastinate NOTIFYs on "procrastinate_queue_v1#"
# + the queue name, and PostgreSQL channel names are at most 63 bytes.
RUN_QUEUE_PREFIX = "ccrun."
PROGRESS_EVERY_S = 1.0  # progress is written at most this often
PROGRESS_EVENT_EVERY_S = 30.0  # and logged as an event at most this often (the first and last always)
CALL_TIMEOUT_S = 60.0
_NO_RETRY = (_core.InvalidArgument, _core.InvalidType)


class BackoffWithJitter(_pretry.BaseRetryStrategy):
    """procrastinate retry strategy: exponential backoff with "equal jitter" -- attempt n (1-based)
    waits uniformly in [d/2, d] with d = min(max_s, base_s * 2**(n-1)) -- up to ``max_attempts``
    attempts in all. Bad arguments (InvalidArgument, InvalidType) are not retried.
    The decision is made once per attempt and remembered, so the event log and the worker agree
    on the delay."""

    def __init__(self, max_attempts: int, base_s: float, max_s: float) -> None:
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.max_s = max_s
        self._decided: dict[tuple[int, int], Optional[float]] = {}
        self._lock = threading.Lock()

    def delay_s(self, exception: BaseException, job_id: int, attempts_before: int) -> Optional[float]:
        key = (job_id, attempts_before)
        with self._lock:
            if key in self._decided:
                return self._decided[key]
            delay: Optional[float] = None
            if attempts_before + 1 < self.max_attempts and not isinstance(exception, _NO_RETRY):
                cap = min(self.max_s, self.base_s * 2.0**attempts_before)
                delay = random.uniform(cap / 2, cap)
            if len(self._decided) > 10_000:
                self._decided.clear()
            self._decided[key] = delay
            return delay

    # procrastinate's BaseRetryStrategy interface
    def get_retry_decision(self, *, exception: BaseException, job: Any) -> Optional[_pretry.RetryDecision]:
        assert job.id is not None
        delay = self.delay_s(exception, job.id, job.attempts)
        if delay is None:
            return None
        return _pretry.RetryDecision(retry_at=_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=delay))


class _Ctx:
    """What a job function sees: progress and cancellation, bridged to the runner's loop."""

    def __init__(self, runner: Runner, job_id: int, should_abort: Callable[[], bool]) -> None:
        self._runner = runner
        self._job_id = job_id
        self._should_abort = should_abort
        self._last_progress = 0.0
        self._last_progress_event = 0.0
        self.done = 0
        self.total: Optional[int] = None

    def progress(self, done: int, total: Optional[int] = None) -> None:
        self.done, self.total = int(done), None if total is None else int(total)
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S and (total is None or done < total):
            return
        self._last_progress = now
        self._runner.call(self._runner.store.progress(self._job_id, self.done, self.total))
        last = self.total is not None and done >= self.total
        if now - self._last_progress_event >= PROGRESS_EVENT_EVERY_S or last:
            self._last_progress_event = now
            of = "" if self.total is None else f" of {self.total}"
            self._runner.call(self._runner.store.event(self._job_id, "progress", f"{self.done}{of}"))

    def check_cancelled(self) -> None:
        from procrastinate import exceptions

        if self._should_abort():
            raise exceptions.JobAborted("cancelled by an operator")

    def log(self, message: str) -> None:
        self._runner.call(self._runner.store.event(self._job_id, "log", message))


def job_name(task_name: str) -> str:
    return task_name[len(TASK_PREFIX) :] if task_name.startswith(TASK_PREFIX) else task_name


def lock_of(name: str, args: dict[str, Any]) -> str:
    """The per-job rate limit: at most one run of a job at a time (procrastinate's ``lock``);
    bulk grants one per job key (two different bulk grants may run side by side)."""
    if name == "bulk_grant":
        return f"{TASK_PREFIX}bulk_grant:{args.get('job_key', '')}"
    return TASK_PREFIX + name


class Runner:
    def __init__(self, engine: Optional[Engine], config: JobsConfig, dsn: Optional[str]) -> None:
        self.engine = engine
        self.config = config
        self.dsn = dsn
        self.metrics = JobMetrics()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="couponcore-jobs", daemon=True)
        self._thread.start()
        self._worker_task: Optional[asyncio.Task[Any]] = None
        self._worker: Any = None
        self._stall_task: Optional[asyncio.Task[Any]] = None
        self._closed = False
        try:
            self.call(self._open())
        except BaseException:
            self._stop_loop()
            raise

    # ---- the loop --------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T], timeout_s: Optional[float] = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the runner's loop from another thread and wait for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("couponcore bug: Runner.call from the runner's own loop")
        from procrastinate import exceptions

        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise _core.Unavailable(f"jobs: no answer within {timeout_s} s") from None
        except exceptions.ConnectorException as e:
            raise _core.Unavailable(f"jobs: database error: {e.__cause__ or e}") from e

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _open(self) -> None:
        import procrastinate

        if self.dsn is None:
            from procrastinate import testing

            connector: Any = testing.InMemoryConnector()
            self.store: Any = MemoryStore(connector)
        else:
            connector = procrastinate.PsycopgConnector(conninfo=self.dsn, min_size=1, max_size=8)
            self.store = PgStore(connector)
        self.connector = connector
        self._build_apps()
        try:
            await self.app.open_async()
        except Exception as e:  # psycopg_pool's PoolTimeout, a refused connection, ...
            raise _core.Unavailable(f"jobs: cannot connect to PostgreSQL: {e}") from e
        try:
            await self.store.check()
        except BaseException:
            await self.app.close_async()
            raise

    def _build_apps(self) -> None:
        """The procrastinate apps of the current configuration, on the runner's one connector."""
        import procrastinate

        # Two apps on one connector: `app` schedules the periodic jobs, `once_app` (no schedules)
        # runs a job now without deferring anybody's periodic jobs as a side effect.
        self.app = procrastinate.App(connector=self.connector, periodic_defaults={"max_delay": 600})
        self.once_app = procrastinate.App(connector=self.connector)
        self.strategies: dict[str, BackoffWithJitter] = {}
        for name in (*FUNCTIONS, RETENTION_JOB):
            self._register(name)
        self.metrics.set_intervals({n: cron_interval_s(c) for n, c in self.config.schedules().items()})

    def reconfigure(self, config: JobsConfig) -> None:
        """New schedules and policies; the jobs recorded so far stay (the same connector)."""
        if self.worker_running:
            raise _core.Conflict("stop the periodic runner before changing its configuration")
        self.config = config

        async def rebuild() -> None:
            self._build_apps()

        self.call(rebuild())

    def _register(self, name: str) -> None:
        cfg = self.config
        attempts = cfg.jobs[name].max_attempts if name in cfg.jobs else 3
        strategy = self.strategies[name] = BackoffWithJitter(attempts, cfg.retry_base_s, cfg.retry_max_s)

        def task(context: Any, **kwargs: Any) -> Any:
            return self._execute(name, context, kwargs)

        task.__name__ = name
        for app in (self.app, self.once_app):
            t = app.task(
                name=TASK_PREFIX + name, pass_context=True, queue=QUEUE, retry=strategy, lock=TASK_PREFIX + name
            )(task)
            if app is self.app:
                cron = cfg.schedules().get(name)
                if cron:
                    args = dict(cfg.jobs[name].args) if name in cfg.jobs else {}
                    app.periodic(
                        cron=cron,
                        periodic_id=name,
                        queueing_lock=f"{TASK_PREFIX}{name}:scheduled",
                        lock=lock_of(name, args),
                        task_kwargs=args,
                    )(t)  # type: ignore[arg-type]  # it receives the firing `timestamp` too

    # ---- running one job ---------------------------------------------------------------------
    def _execute(self, name: str, context: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Runs in procrastinate's worker thread: the job function itself."""
        job_id = context.job.id
        ctx = _Ctx(self, job_id, context.should_abort)
        args = {k: v for k, v in kwargs.items() if k != "timestamp"}
        if name == RETENTION_JOB:
            ctx.check_cancelled()
            n = self.call(self.store.purge(self.config.retention_succeeded_s, self.config.retention_failed_s))
            return {"rows": n, "deleted": n}
        if self.engine is None:
            raise _core.Unavailable("this runner has no engine")
        result = FUNCTIONS[name](self.engine, ctx, **args)
        if ctx.done or ctx.total is not None:
            self.call(self.store.progress(job_id, ctx.done, ctx.total))
        return result

    async def _middleware(self, call_next: Callable[[], Any], context: Any, worker: Any) -> Any:
        """procrastinate worker middleware, on the loop: the event log and the metrics."""
        from procrastinate import exceptions

        job = context.job
        name = job_name(job.task_name)
        strategy = self.strategies.get(name)
        attempt = job.attempts + 1
        max_attempts = strategy.max_attempts if strategy else 1
        await self.store.started(job.id)
        await self.store.event(job.id, "started", f"attempt {attempt} of {max_attempts}")
        t0 = time.monotonic()
        try:
            result = await call_next()
        except BaseException as e:
            self.metrics.attempt(name, time.monotonic() - t0)
            error = f"{type(e).__name__}: {e}"
            if isinstance(e, (exceptions.JobAborted, asyncio.CancelledError)):
                shutdown = context.abort_reason() is not None and context.abort_reason().value == "shutdown"
                if shutdown:
                    await self.store.event(job.id, "interrupted", "the worker stopped; the job will run again")
                else:
                    await self.store.finished(job.id, "cancelled", None)
                    await self.store.event(job.id, "cancelled", "cancelled while running")
                    self.metrics.ended(name, "cancelled")
                raise
            delay = strategy.delay_s(e, job.id, job.attempts) if strategy else None
            if delay is not None:
                await self.store.event(
                    job.id, "retry_scheduled", f"{error}; attempt {attempt + 1} of {max_attempts} in {delay:.3f} s"
                )
            else:
                await self.store.finished(job.id, error, None)
                await self.store.event(job.id, "failed", error)
                self.metrics.ended(name, "failed")
            raise
        duration = time.monotonic() - t0
        self.metrics.attempt(name, duration)
        rows = int(result.get("rows", 0)) if isinstance(result, dict) else 0
        await self.store.finished(job.id, None, result if isinstance(result, dict) else None)
        await self.store.event(job.id, "succeeded", f"{rows} rows in {duration:.2f} s")
        self.metrics.ended(name, "succeeded", rows, time.time())
        return result

    def _worker_options(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "install_signal_handlers": False,
            "worker_middleware": [self._middleware],
            "update_heartbeat_interval": cfg.heartbeat_s,
            "stalled_worker_timeout": cfg.stalled_after_s,
            "fetch_job_polling_interval": cfg.poll_s,
            "abort_job_polling_interval": min(cfg.poll_s, 1.0),
        }

    # ---- the API's operations (each runs on the loop) --------------------------------------
    async def defer(self, name: str, args: dict[str, Any], queue: str = QUEUE, event: str = "") -> int:
        task = self.app.tasks[TASK_PREFIX + name]
        job_id = await task.configure(queue=queue, lock=lock_of(name, args)).defer_async(**args)
        await self.store.event(job_id, "queued", event)
        return int(job_id)

    async def _running_with_lock(self, lock: str, besides: Optional[int] = None) -> Optional[int]:
        for job in await self.app.job_manager.list_jobs_async(status="doing", lock=lock):
            if job.id is not None and job.id != besides:
                return int(job.id)
        return None

    async def run_now(self, name: str, args: dict[str, Any], event: str = "run now") -> int:
        """Defer ``name`` on a private queue and run it here with a one-off worker until it ends
        (retries included: they wait their backoff); returns the job id."""
        lock = lock_of(name, args)
        running = await self._running_with_lock(lock)
        if running is not None:
            raise _core.Conflict(f"{name} is running already (job {running}): at most one runs at a time")
        queue = RUN_QUEUE_PREFIX + uuid.uuid4().hex[:16]
        job_id = await self.defer(name, args, queue=queue, event=event)
        opts = self._worker_options()
        opts.update(queues=[queue], listen_notify=False, fetch_job_polling_interval=min(0.2, self.config.poll_s))
        worker = self.once_app._worker(name=f"run-{job_id}", wait=True, **opts)
        task = asyncio.ensure_future(worker.run())
        try:
            while not task.done():
                status = (await self.app.job_manager.get_job_status_async(job_id)).value
                if status in FINAL_STATUSES:
                    break
                if status == "todo" and await self._running_with_lock(lock, besides=job_id) is not None:
                    # lost a race with a worker starting the same job: leave it to that one
                    if await self.app.job_manager.cancel_job_by_id_async(job_id):
                        await self.store.finished(job_id, "cancelled", None)
                        await self.store.event(job_id, "cancelled", "another run of this job started first")
                        break
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await task
        return job_id

    async def cancel(self, job_id: int) -> bool:
        ok = await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        if ok:
            status = (await self.app.job_manager.get_job_status_async(job_id)).value
            if status == "cancelled":
                await self.store.finished(job_id, "cancelled", None)
                await self.store.event(job_id, "cancelled", "cancelled before it started")
                name = job_name((await self.store.get(job_id) or {}).get("task_name", ""))
                self.metrics.ended(name, "cancelled")
            else:
                await self.store.event(job_id, "cancel_requested", "the job stops at its next check")
        return bool(ok)

    async def recover_stalled(self) -> list[int]:
        """Jobs left running by a worker that stopped sending heartbeats (killed, its machine
        gone): queued again on the main queue (procrastinate's stalled-job recipe)."""
        from procrastinate import utils

        await self.app.job_manager.prune_stalled_workers(self.config.stalled_after_s)
        stalled = await self.app.job_manager.get_stalled_jobs(seconds_since_heartbeat=self.config.stalled_after_s)
        ids = []
        for job in stalled:
            if not job.task_name.startswith(TASK_PREFIX) or job.id is None:
                continue
            await self.app.job_manager.retry_job_by_id_async(job.id, retry_at=utils.utcnow(), queue=QUEUE)
            await self.store.event(job.id, "stalled", "its worker stopped sending heartbeats; queued again")
            ids.append(int(job.id))
        return ids

    async def _stall_loop(self) -> None:
        while True:
            try:
                ids = await self.recover_stalled()
                if ids:
                    log.warning("jobs: re-queued stalled jobs %s", ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jobs: stalled-job check failed")
            await asyncio.sleep(max(0.5, self.config.stalled_after_s / 2))

    # ---- the long-running worker ------------------------------------------------------------
    async def _seed_metrics(self) -> None:
        for job in self.config.schedules():
            for row in await self.store.list(["succeeded"], TASK_PREFIX + job, 1):
                at = row.get("finished_at")
                if at is not None:
                    self.metrics.seed_last_success(job, at.timestamp())

    async def _start_worker(self, name: str) -> None:
        if self._worker_task is not None and not self._worker_task.done():
            raise _core.Conflict("the jobs runner is running already")
        await self._seed_metrics()
        self._worker = self.app._worker(name=name, queues=[QUEUE], wait=True, **self._worker_options())
        self._worker_task = asyncio.ensure_future(self._worker.run())
        self._stall_task = asyncio.ensure_future(self._stall_loop())

    def start_worker(self, name: str = "couponcore-jobs") -> None:
        self.call(self._start_worker(name))

    @property
    def worker_running(self) -> bool:
        return self._worker_task is not None and not self._worker_task.done()

    async def _stop_worker(self) -> None:
        if self._stall_task is not None:
            self._stall_task.cancel()
            try:
                await self._stall_task
            except asyncio.CancelledError:
                pass
            self._stall_task = None
        if self._worker is not None and self._worker_task is not None:
            self._worker.stop()
            try:
                await self._worker_task
            except Exception:
                log.exception("jobs: the worker ended with an error")
        self._worker = self._worker_task = None

    def stop_worker(self, timeout_s: Optional[float] = None) -> None:
        self.call(self._stop_worker(), timeout_s)

    def wait_worker(self, timeout_s: float) -> bool:
        """True once the worker has ended (by itself: a failed side task), within timeout_s."""
        task = self._worker_task
        if task is None:
            return True
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: task.add_done_callback(lambda _t: done.set()))
        return done.wait(timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.call(self._stop_worker(), None)
            self.call(self.app.close_async())
        finally:
            self._stop_loop()
