"""``couponcore jobs``: worker | run NAME [--arg k=v] | list | show ID | rerun ID | cancel ID | schedules.

Production (``--redis`` and ``--postgres``): the jobs live in PostgreSQL, shared by every worker
and engine. Embedded (``--path``, the default ``couponcore.db``): ``run`` runs the job on the
SQLite file in this process, and ``worker`` runs the schedules in this process; the other
commands see only this process's jobs (there are none in a new one), so they are for production.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, Optional

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def add_parser(sub: Any, servers: Any) -> None:
    j = sub.add_parser(
        "jobs",
        help="scheduled maintenance jobs (procrastinate): worker, run, list, show, rerun, cancel, schedules",
        description="couponcore's maintenance jobs on procrastinate: expire_coupons, expire_points, "
        "purge_idempotency, reconcile, redrive_dead_letters, bulk_grant, prune_events (docs/jobs.md).",
    )
    jsub = j.add_subparsers(dest="jobs_command", metavar="JOBS_COMMAND")
    jsub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        servers(p, "the production deployment (jobs in its PostgreSQL); default: the embedded engine")
        p.add_argument("--path", default=None, help="SQLite file of the embedded engine (couponcore.db)")
        p.add_argument("--config", default=None, help="jobs configuration, a .toml or .yaml file (schedules, retries)")
        p.add_argument("--json", action="store_true", help="print JSON")

    w = jsub.add_parser("worker", help="run queued and scheduled jobs until SIGTERM / SIGINT")
    common(w)
    w.add_argument("--metrics-port", type=int, default=None, help="serve /metrics (Prometheus) on this port")
    w.add_argument("--metrics-host", default="127.0.0.1", help="bind address of /metrics (127.0.0.1)")
    w.add_argument("--no-migrate", action="store_true", help="do not apply the jobs schema at start")
    w.add_argument("--writer-threads", type=int, default=0, help="grant writers in this process (0)")

    r = jsub.add_parser("run", help="run one job now, in this process, and print its run")
    common(r)
    r.add_argument("name", help="job name")
    r.add_argument("--arg", action="append", default=[], metavar="K=V", help="job argument (V as JSON, else a string)")

    d = jsub.add_parser("defer", help="queue one job for a worker")
    common(d)
    d.add_argument("name", help="job name")
    d.add_argument("--arg", action="append", default=[], metavar="K=V", help="job argument (V as JSON, else a string)")

    ls = jsub.add_parser("list", help="jobs, newest first")
    common(ls)
    ls.add_argument("--state", default=None, help="queued, running, succeeded, failed or cancelled")
    ls.add_argument("--name", default=None, help="only this job")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (50)")

    for cmd, what in (
        ("show", "one job and its event log"),
        ("rerun", "re-run a failed or cancelled job"),
        ("cancel", "cancel a queued or running job"),
    ):
        p = jsub.add_parser(cmd, help=what)
        common(p)
        p.add_argument("id", type=int, help="job id")

    s = jsub.add_parser("schedules", help="the scheduled jobs: cron, next and last run")
    common(s)


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    from .. import _core

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _core.InvalidArgument(f"--arg takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _open(args: argparse.Namespace, writer_threads: int = 0, migrate: bool = True) -> Any:
    from .._engine import open as open_engine

    if args.redis is not None:
        return open_engine(
            redis=args.redis,
            postgres=args.postgres,
            key_prefix=args.key_prefix,
            writer_threads=writer_threads,
            migrate=migrate,
        )
    return open_engine(args.path)


def _print_run(run: Any, as_json: bool, with_events: bool = False) -> None:
    if as_json:
        print(json.dumps(run.to_json(), default=str))
        return
    total = "" if run.progress_total is None else f"/{run.progress_total}"
    print(
        f"job {run.id} {run.name} {run.state} attempts={run.attempts} progress={run.progress_done}{total}"
        f" args={json.dumps(run.args, default=str)}" + (f" error={run.error}" if run.error else "")
    )
    if with_events:
        for e in run.events:
            print(f"  {e.at.isoformat()} {e.type:16} {e.message}")


def _serve_metrics(host: str, port: int, text: Any) -> Any:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="couponcore-jobs-metrics", daemon=True).start()
    return server


def _worker(args: argparse.Namespace) -> int:
    engine = _open(args, args.writer_threads, migrate=not args.no_migrate)
    try:
        jobs = engine.jobs
        if args.config:
            jobs.configure(args.config)
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            print(
                f"couponcore jobs worker: {signal.Signals(signum).name}, finishing the job in hand",
                file=sys.stderr,
                flush=True,
            )
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server = None
        jobs.start_periodic()
        jobs._r().metrics.active = True
        if args.metrics_port is not None:
            server = _serve_metrics(args.metrics_host, args.metrics_port, jobs.metrics_text)
        names = ", ".join(f"{n} [{c}]" for n, c in jobs.config.schedules().items())
        print(f"couponcore jobs worker: running ({engine.kind}); schedules: {names}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not jobs.periodic_running:
                print("couponcore jobs worker: the worker stopped", file=sys.stderr)
                return EXIT_ERROR
        jobs.stop_periodic()
        if server is not None:
            server.shutdown()
        return EXIT_OK
    finally:
        engine.close()


def main(args: argparse.Namespace) -> int:
    if (args.redis is None) != (args.postgres is None):
        print("couponcore jobs: give both --redis and --postgres, or neither", file=sys.stderr)
        return EXIT_USAGE
    cmd = args.jobs_command
    if cmd == "worker":
        return _worker(args)
    engine = _open(args)
    try:
        jobs = engine.jobs
        if args.config:
            jobs.configure(args.config)
        if cmd == "run":
            run = jobs.run(args.name, **_parse_args(args.arg))
            _print_run(run, args.json, with_events=True)
            return EXIT_OK if run.state == "succeeded" else EXIT_CHECK_FAILED
        if cmd == "defer":
            _print_run(jobs.defer(args.name, **_parse_args(args.arg)), args.json)
            return EXIT_OK
        if cmd == "list":
            runs = jobs.list(state=args.state, name=args.name, limit=args.limit)
            if args.json:
                print(json.dumps([r.to_json() for r in runs], default=str))
            else:
                for r in runs:
                    _print_run(r, False)
            return EXIT_OK
        if cmd == "show":
            _print_run(jobs.get(args.id), args.json, with_events=True)
            return EXIT_OK
        if cmd == "rerun":
            _print_run(jobs.rerun(args.id), args.json)
            return EXIT_OK
        if cmd == "cancel":
            _print_run(jobs.cancel(args.id), args.json)
            return EXIT_OK
        if cmd == "schedules":
            scheds = jobs.schedules()
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                "name": s.name,
                                "cron": s.cron,
                                "interval_s": s.interval_s,
                                "next_run_at": s.next_run_at.isoformat(),
                                "last_run_at": s.last_run_at.isoformat() if s.last_run_at else None,
                                "last_state": s.last_state,
                            }
                            for s in scheds
                        ]
                    )
                )
            else:
                for s in scheds:
                    last = s.last_run_at.isoformat() if s.last_run_at else "never"
                    print(f"{s.name:22} {s.cron:16} next {s.next_run_at.isoformat()}  last {last} {s.last_state or ''}")
            return EXIT_OK
    finally:
        engine.close()
    return EXIT_USAGE


def migrate_if_installed(postgres: str) -> Optional[int]:
    """``couponcore migrate`` also applies the jobs schema when procrastinate is installed."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return None
    from ._store import migrate

    return migrate(postgres)
