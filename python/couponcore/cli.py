"""The ``couponcore`` command.

Exit codes: 0 success; 1 the run finished but a check failed; 2 bad usage;
3 a couponcore error (for example a server that cannot be reached).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: 1..65535")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="couponcore",
        description="First-come-first-served coupon drops and point wallets: a native core for Python.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 bad usage, 3 couponcore error.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser(
        "demo",
        help="run a flash sale and verify the store",
        description="Run a flash sale (default: 10,000 coupons, 200,000 requests from 100,000 users, "
        "500 concurrent virtual users) on the embedded engine, then read the store back and check it.",
    )
    d.add_argument("--quantity", type=_positive_int, default=10_000, help="coupons in the campaign (10000)")
    d.add_argument("--users", type=_positive_int, default=100_000, help="distinct users (100000)")
    d.add_argument("--requests", type=_positive_int, default=200_000, help="requests in all (200000)")
    d.add_argument("--concurrency", type=_positive_int, default=500, help="concurrent virtual users (500)")
    d.add_argument("--per-user-limit", type=_positive_int, default=1, help="coupons per user (1)")
    d.add_argument("--seed", type=int, default=42, help="random seed of the traffic (42)")
    d.add_argument("--path", default=None, help="SQLite file to use (default: a temporary file)")
    d.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    _servers(d, "run the sale on the production deployment (migrates the database itself)")

    w = sub.add_parser(
        "worker",
        help="run the grant writer: Redis Streams -> PostgreSQL",
        description="Read every campaign's grant stream and insert the grants into PostgreSQL in "
        "batches, idempotently; for deployments whose web processes open the engine with "
        "writer_threads=0. Runs until SIGTERM or SIGINT, then finishes the batch in hand.",
    )
    _servers(w, "the servers to connect", required=True)
    w.add_argument("--threads", type=_positive_int, default=1, help="writer threads (1)")
    w.add_argument("--consumer-name", default="", help="consumer name base (default host-pid)")
    w.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    w.add_argument("--replicas-acked", type=int, default=0, help="write grants once this many replicas hold them (0)")
    w.add_argument("--replica-wait-ms", type=int, default=100, help="WAIT timeout for --replicas-acked (100)")
    w.add_argument("--no-events", action="store_true", help="write no coupon.issued / campaign.sold_out events")
    w.add_argument(
        "--no-events-relay", action="store_true", help="run no outbox relay here (docs/events.md; one is active)"
    )
    w.add_argument(
        "--no-windows", action="store_true", help="run no live-windows aggregator here (docs/windows.md; one is active)"
    )
    w.add_argument("--report-s", type=float, default=10.0, help="print stats every this many seconds (0: never)")
    w.add_argument(
        "--tracing",
        choices=("auto", "on", "off"),
        default="auto",
        help="couponcore.writer.commit spans (docs/tracing.md). auto: when OpenTelemetry's SDK is configured "
        "(opentelemetry-instrument, or opentelemetry-sdk installed and OTEL_TRACES_EXPORTER set); on: the same, "
        "but fail if it is not; off: none",
    )
    w.add_argument(
        "--metrics-port", type=_port, default=None, help="serve Prometheus metrics at GET /metrics on this port"
    )
    w.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (127.0.0.1)")

    sv = sub.add_parser(
        "serve",
        help="serve the REST API (FastAPI + uvicorn)",
        description="Serve couponcore's REST API with uvicorn: the embedded engine by default, or the "
        "production deployment with --redis and --postgres.",
    )
    sv.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (8000)")
    sv.add_argument("--path", default=None, help="SQLite file of the embedded engine (couponcore.db)")
    sv.add_argument("--log-level", default="warning", help="uvicorn log level (warning)")
    sv.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "auto"),
        default="asyncio",
        help="event loop (asyncio). uvloop is uvicorn's default when installed, but once a process is "
        "saturated it keeps taking new requests ahead of writing finished responses: at 500 connections "
        "its p95 latency was 10-15x asyncio's for the same throughput (bench/RESULTS.md)",
    )
    sv.add_argument(
        "--create-partner",
        default=None,
        metavar="NAME",
        help="create a partner at start and print its API key (for trying the API)",
    )
    sv.add_argument(
        "--operator-key-file",
        default=None,
        metavar="PATH",
        help="serve the ops page at /ops behind the operator key in this file (its first line); without it, "
        "the COUPONCORE_OPERATOR_KEY environment variable, else /ops is off (docs/ops-page.md)",
    )
    sv.add_argument(
        "--address-rate-limit",
        type=int,
        default=0,
        metavar="N",
        help="at most N issue requests per client address per second, then 429 (0: off); counted in Redis "
        "for every process of a production deployment, in this process for an embedded one; "
        "behind a proxy add --client-address-header X-Forwarded-For (docs/rate-limits.md)",
    )
    sv.add_argument("--client-address-header", default=None, metavar="NAME", help="the header your proxy sets")
    _servers(sv, "serve the production deployment")

    from ._cli_deadletters import add_parser as add_deadletters

    add_deadletters(sub, _servers)

    mg = sub.add_parser(
        "migrate",
        help="apply the PostgreSQL migrations",
        description="Apply couponcore's PostgreSQL schema migrations (idempotent).",
    )
    mg.add_argument("--postgres", required=True, help="PostgreSQL URL")

    from .jobs._cli import add_parser as add_jobs_parser

    add_jobs_parser(sub, _servers)

    wn = sub.add_parser(
        "windows",
        add_help=False,
        help="aggregate the live windows (docs/windows.md; `couponcore windows --help`)",
        description="Run the live windows' aggregator (python -m couponcore.windows).",
    )
    wn.add_argument("rest", nargs=argparse.REMAINDER)

    from .events._cli import add_parser as add_events_parser

    add_events_parser(sub, _servers)

    b = sub.add_parser(
        "bench",
        help="side-by-side benchmarks (JSON)",
        description="Run a benchmark of couponcore and its baseline side by side, print one JSON object.",
    )
    b.add_argument("name", choices=["all", *sorted(_bench_names())], help="which benchmark")
    b.add_argument("--json", action="store_true", help="print JSON (the only format; accepted for scripts)")
    return p


def _servers(p: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    g = p.add_argument_group("servers", what)
    g.add_argument(
        "--redis",
        required=required,
        default=None,
        help="Redis URL, e.g. redis://127.0.0.1:6379/0, redis+cluster://h:7000,h:7001 or redis+sentinel://h:26379/mymaster",
    )
    g.add_argument("--postgres", required=required, default=None, help="PostgreSQL URL")
    g.add_argument("--key-prefix", default="cc:", help="prefix of every Redis key (cc:)")


def _run_worker(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from . import _core

    worker = _core.Worker(
        {
            "redis_url": args.redis,
            "postgres_url": args.postgres,
            "key_prefix": args.key_prefix,
            "threads": args.threads,
            "consumer_name": args.consumer_name,
            "migrate_on_start": not args.no_migrate,
            "replicas_acked": args.replicas_acked,
            "replica_wait_ms": args.replica_wait_ms,
            "events": not args.no_events,
            "events_relay": not args.no_events_relay,
        }
    )
    from .tracing import SpanEmitter, worker_tracer_provider

    try:
        provider = worker_tracer_provider(args.tracing)
    except RuntimeError as e:
        print(f"couponcore worker: {e}", file=sys.stderr)
        return EXIT_USAGE
    # The writers' commits as spans, linked to the grants' trace contexts (read from the log).
    spans = SpanEmitter(worker, provider) if provider is not None else None
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"couponcore worker: {signal.Signals(signum).name}, finishing the batch in hand", file=sys.stderr)
        worker.stop()
        stop.set()

    windows = None
    if not args.no_windows:
        from .windows import WorkerWindows

        try:
            windows = WorkerWindows(args.redis, args.postgres, args.key_prefix)
        except _core.Error as e:  # psycopg missing, a source it cannot read: the writer runs on
            print(f"couponcore worker: no live windows here: {e}", file=sys.stderr, flush=True)
    server = None
    if args.metrics_port is not None:
        from .metrics import render_worker
        from .metrics_http import serve_metrics

        # Bound before the writer starts: a port in use fails the command at once (exit 3).
        server = serve_metrics(
            lambda: render_worker(worker, threads=args.threads, windows=windows),
            host=args.metrics_host,
            port=args.metrics_port,
        )
        print(f"couponcore worker: metrics at {server.url}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.start()
        if windows is not None:
            windows.start()
        traced = ", commit spans on" if spans is not None else ""
        print(f"couponcore worker: writing grants with {args.threads} thread(s){traced}", file=sys.stderr, flush=True)
        last = time.monotonic()
        while not worker.join(0.2):
            if args.report_s > 0 and time.monotonic() - last >= args.report_s:
                last = time.monotonic()
                print(json.dumps(worker.stats()), file=sys.stderr, flush=True)
    finally:
        if windows is not None:
            windows.stop()
        if server is not None:
            server.close()
        if spans is not None:
            spans.close()  # the last commits' spans
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush()
    print(json.dumps(worker.stats()), flush=True)
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    if (args.redis is None) != (args.postgres is None):
        print("couponcore serve: give both --redis and --postgres, or neither", file=sys.stderr)
        return EXIT_USAGE
    try:
        import uvicorn

        from .fastapi import create_app
    except ImportError as e:
        print(f"couponcore serve needs FastAPI and uvicorn: pip install 'couponcore[server]' ({e})", file=sys.stderr)
        return EXIT_USAGE
    from ._engine import open as open_engine
    from .ops import read_operator_key_file

    operator_key = read_operator_key_file(args.operator_key_file) if args.operator_key_file else None
    if not 0 <= args.address_rate_limit <= 1_000_000:
        print("couponcore serve: --address-rate-limit must be 0..1000000", file=sys.stderr)
        return EXIT_USAGE
    if args.redis is not None:
        engine = open_engine(redis=args.redis, postgres=args.postgres, key_prefix=args.key_prefix)
    else:
        engine = open_engine(args.path)
    if args.create_partner:
        key = engine.partners.create(args.create_partner)
        print(f"partner {key.partner.id} ({key.partner.name}): X-API-KEY {key.api_key}", flush=True)
    app = create_app(
        engine,
        close_engine_on_shutdown=True,
        operator_key=operator_key,
        address_rate_limit=args.address_rate_limit,
        client_address_header=args.client_address_header,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, loop=args.loop)
    return EXIT_OK


def _bench_names() -> list[str]:
    from .bench import BENCHMARKS

    return list(BENCHMARKS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["windows"]:  # its own parser (python -m couponcore.windows)
        from .windows.__main__ import main as windows_main

        return windows_main(given[1:])
    args = build_parser().parse_args(argv)
    from . import Error

    try:
        if args.command == "demo":
            from .demo import DemoConfig
            from .demo import main as demo_main

            if args.requests < args.users:
                print("couponcore demo: --requests must be at least --users", file=sys.stderr)
                return EXIT_USAGE
            if (args.redis is None) != (args.postgres is None):
                print("couponcore demo: give both --redis and --postgres, or neither", file=sys.stderr)
                return EXIT_USAGE
            cfg = DemoConfig(
                quantity=args.quantity,
                users=args.users,
                requests=args.requests,
                concurrency=args.concurrency,
                per_user_limit=args.per_user_limit,
                seed=args.seed,
                path=args.path,
            )
            factory = None
            if args.redis is not None:
                from ._engine import open as open_engine

                def factory() -> Any:
                    return open_engine(redis=args.redis, postgres=args.postgres, key_prefix=args.key_prefix)

            return demo_main(cfg, args.json, factory)
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _run_worker(args)
        if args.command == "deadletters":
            from ._cli_deadletters import run as run_deadletters

            return run_deadletters(args)
        if args.command == "migrate":
            from ._engine import migrate

            n = migrate(args.postgres)
            print(f"couponcore migrate: {n} migration(s) applied")
            from .jobs._cli import migrate_if_installed

            steps = migrate_if_installed(args.postgres)
            if steps is not None:
                print(f"couponcore migrate: jobs schema (procrastinate): {steps} step(s) applied")
            return EXIT_OK
        if args.command == "events":
            from .events._cli import run as run_events

            return run_events(args)
        if args.command == "jobs":
            from .jobs._cli import main as jobs_main

            return jobs_main(args)
        if args.command == "bench":
            import json

            from .bench import BENCHMARKS

            names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
            for name in names:
                print(json.dumps(BENCHMARKS[name]()), flush=True)
            return EXIT_OK
    except Error as e:
        print(f"couponcore: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE
